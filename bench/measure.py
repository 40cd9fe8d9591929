"""The measurements of the pytest-expiry benchmark (started by ``bench/run.py``).

Runs with the bench's virtualenv python, which has this repository installed together with
pytest-timeout and pytest-xdist; uses the standard library and psutil only. Every measured
command is that python running pytest in a suite generated under ``bench/.work/suites``.
Configurations are isolated with ``-p no:timeout`` / ``-p no:expiry``; timed configurations
are run alternately (the order rotates each round) and their medians compared, because the
machine is noisy: ratios within one run are what counts.

Markdown goes to stdout and to the output file; progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import suites
from procstat import cpu_seconds, start_time, wakeups
from run import INSTALLED, QUICK_RESULTS, RESULTS, SECTIONS, WORK, build_parser

TOKEN_ENV = "PYTEST_EXPIRY_BENCH_TOKEN"
TESTS = 3000
BASE = ("-p", "no:cacheprovider", "-q")
BARE = ("-p", "no:timeout", "-p", "no:expiry")
TIMEOUT_SIGNAL = ("-p", "no:expiry", "--timeout=60", "--timeout-method=signal")
TIMEOUT_THREAD = ("-p", "no:expiry", "--timeout=60", "--timeout-method=thread")
EXPIRY = ("-p", "no:timeout", "--expiry=60")
HANG_DEADLINE = 0.5
HARD_GRACE = 1.0
TREE_DEADLINE = 4.0
TREE_GRACE = 1.0
TREE_CHILDREN, TREE_GRANDCHILDREN = 10, 4

# targets of the issue
OVERHEAD_RATIO = 1.02
STARTUP_ADDED = 0.050
SOFT_LATENCY = 0.050
HARD_MARGIN = 0.100
TREE_LATENCY = 0.200
IDLE_CPU_PERCENT = 0.1
FLAT_MARGIN_US, FLAT_FRACTION = 10.0, 0.25
CLEAN_UP_WAIT = 3.0


class BenchError(Exception):
    """A measured command did not do what the bench needs; the section is not measured."""


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- running


@dataclass
class Finished:
    returncode: int
    wall: float
    cpu: float
    ended_at: float
    output: str
    timed_out: bool

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


class Job:
    """One measured command, in a session of its own so that it can be ended whole."""

    def __init__(
        self, command: Sequence[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> None:
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        self._lock = threading.Lock()
        self._reaped = False
        self.timed_out = False
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.process.pid
        self._timer = threading.Timer(timeout, self._time_out)
        self._timer.daemon = True
        self._timer.start()

    def _time_out(self) -> None:
        with self._lock:
            if not self._reaped:
                self.timed_out = True
                with contextlib.suppress(OSError):
                    os.killpg(self.pid, signal.SIGKILL)

    def wait(self) -> Finished:
        # wait without reaping first: until it is reaped, the pid (and its process group)
        # cannot be handed to another process, so the timer never signals a stranger
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        ended_at = time.monotonic()
        wall = time.perf_counter() - self.started
        with self._lock:
            self._timer.cancel()
            self._reaped = True
            _, status, usage = os.wait4(self.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._out.seek(0)
        output = self._out.read().decode(errors="replace")
        self._out.close()
        cpu = usage.ru_utime + usage.ru_stime
        return Finished(self.process.returncode, wall, cpu, ended_at, output, self.timed_out)


@dataclass
class Leftovers:
    lingered: list[str] = field(default_factory=list)  # ended by themselves, a little late
    killed: list[str] = field(default_factory=list)  # the bench had to kill them


def _name(process: psutil.Process) -> str:
    try:
        argv = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid}"
    return " ".join([Path(argv[0]).name, *argv[1:3]]) if argv else f"pid {process.pid}"


def _counted(names: Sequence[str]) -> str:
    return ", ".join(f"{count} x `{name}`" for name, count in Counter(names).most_common())


class Runner:
    """Starts measured commands in a clean environment tagged with this bench's token, and
    finds whatever they leave behind (the token is inherited by every descendant)."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTEST_", "PYTHON")) and k != "COV_CORE_SOURCE"
        }
        env[TOKEN_ENV] = self.token
        self.env = env
        self.leftovers = Leftovers()

    def pytest(
        self,
        suite: Path,
        args: Iterable[str],
        timeout: float = 300.0,
        env: dict[str, str] | None = None,
    ) -> Job:
        command = [sys.executable, "-m", "pytest", *BASE, *args]
        return Job(command, suite, {**self.env, **(env or {})}, timeout)

    def ours(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            if process.pid == os.getpid():
                continue
            try:
                if process.environ().get(TOKEN_ENV) == self.token:
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def clean_up(self, wait: float = CLEAN_UP_WAIT) -> None:
        """Wait a little for what the last commands left running, then kill the rest."""
        end = time.monotonic() + wait
        found = self.ours()
        names = {process.pid: _name(process) for process in found}
        while found and time.monotonic() < end:
            time.sleep(0.1)
            found = [p for p in found if _running(p)]
        lingering = self.ours()
        still = {process.pid for process in lingering}
        self.leftovers.lingered += [name for pid, name in names.items() if pid not in still]
        for process in lingering:
            name = _name(process)
            try:
                process.kill()
            except psutil.Error:
                continue
            self.leftovers.killed.append(name)
        psutil.wait_procs(lingering, timeout=3)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# --------------------------------------------------------------------------- statistics


@dataclass
class Stats:
    walls: list[float]
    cpus: list[float]

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    def range_text(self) -> str:
        return f"{min(self.walls):.3f}-{max(self.walls):.3f} s"


@dataclass(frozen=True)
class Config:
    name: str
    args: tuple[str, ...]
    workers: int = 0  # 0: without xdist

    def argv(self) -> list[str]:
        return [*(["-n", str(self.workers)] if self.workers else []), *self.args]


def alternate(
    runner: Runner, suite: Path, configs: Sequence[Config], repeats: int, expect: str
) -> dict[Config, Stats]:
    """Run every configuration ``repeats`` times, alternating (the order rotates each
    round), after one untimed warm-up run (it writes the suite's bytecode caches)."""
    stats = {config: Stats([], []) for config in configs}

    def run(config: Config) -> Finished:
        done = runner.pytest(suite, config.argv()).wait()
        if done.returncode != 0 or expect not in done.output:
            raise BenchError(
                f"`pytest {' '.join(config.argv())}` ended with {done.returncode}, "
                f"expected {expect!r}:\n{done.tail()}"
            )
        return done

    run(configs[0])
    for round_ in range(repeats):
        shift = round_ % len(configs)
        for config in [*configs[shift:], *configs[:shift]]:
            done = run(config)
            stats[config].walls.append(done.wall)
            stats[config].cpus.append(done.cpu)
        log(f"  round {round_ + 1}/{repeats} done")
    return stats


# --------------------------------------------------------------------------- markdown


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if abs(seconds) >= 0.0995 else f"{seconds * 1e3:.1f} ms"


def us(seconds: float, sign: bool = True) -> str:
    return f"{seconds * 1e6:+.1f} µs" if sign else f"{seconds * 1e6:.1f} µs"


def pct(ratio: float) -> str:
    return f"{ratio:.3f} ({ratio - 1:+.1%})"


def met(ok: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not measured"}[ok]


@dataclass
class Target:
    what: str
    target: str
    measured: str
    ok: bool | None


@dataclass
class Section:
    title: str
    text: str
    targets: list[Target] = field(default_factory=list)


def not_measured(title: str, reason: str, targets: Sequence[str] = ()) -> Section:
    reason = reason.strip().replace("\n", "\n    ")
    text = f"Not measured:\n\n    {reason}\n"
    return Section(
        title,
        text,
        [Target(t, "", f"not measured: {reason.splitlines()[0]}", None) for t in targets],
    )


# --------------------------------------------------------------------------- sections


def _overhead_rows(
    stats: dict[Config, Stats], bare_of: Callable[[Config], Config]
) -> list[list[str]]:
    rows = []
    for config, s in stats.items():
        bare = stats[bare_of(config)]
        rows.append(
            [
                config.name,
                str(config.workers or "none"),
                f"{s.wall:.3f} s",
                s.range_text(),
                pct(s.wall / bare.wall),
                us((s.wall - bare.wall) / TESTS),
                f"{s.cpu:.3f} s",
                pct(s.cpu / bare.cpu),
                us((s.cpu - bare.cpu) / TESTS),
            ]
        )
    return rows


_OVERHEAD_HEADERS = (
    "configuration",
    "workers",
    "wall, median",
    "wall, range",
    "wall vs bare",
    "wall added per test",
    "CPU, median",
    "CPU vs bare",
    "CPU added per test",
)

_OVERHEAD_TEXT = (
    "{tests} trivial tests (`def test_N(): pass`, 100 to a module). *wall*: the bench's wall "
    'clock around the whole `pytest` command, start-up included (not pytest\'s own "in X s"), '
    "median of {repeats} runs per configuration, the configurations alternated round by round; "
    "*range*: fastest-slowest run. *CPU*: user + system time of the pytest process and of the "
    "processes it waited for (the watchdog, xdist workers). *added per test*: (median - median "
    "of bare pytest with the same workers) / {tests}; it includes each configuration's fixed "
    "start-up cost (see Start-up) spread over the {tests} tests.\n\n"
    "Options: bare `{bare}`; pytest-timeout `{signal}` (or `thread`); pytest-expiry "
    "`{expiry}`; always `{base}`."
)


def _overhead_text(repeats: int) -> str:
    return _OVERHEAD_TEXT.format(
        tests=TESTS,
        repeats=repeats,
        bare=" ".join(BARE),
        signal=" ".join(TIMEOUT_SIGNAL),
        expiry=" ".join(EXPIRY),
        base=" ".join(BASE),
    )


def _ratio_targets(stats: dict[Config, Stats], configs: list[Config], where: str) -> list[Target]:
    bare, signal_, _thread, expiry = (stats[c] for c in configs)
    ratio = expiry.wall / bare.wall
    per_test = (expiry.wall - bare.wall) / TESTS
    signal_per_test = (signal_.wall - bare.wall) / TESTS
    return [
        Target(
            f"per-test overhead{where}",
            "pytest-expiry ≤ 2 % over bare pytest",
            f"{ratio - 1:+.1%} ({us(per_test)} per test)",
            ratio <= OVERHEAD_RATIO,
        ),
        Target(
            f"vs pytest-timeout{where}",
            "pytest-expiry no slower than pytest-timeout (signal)",
            f"expiry {expiry.wall:.3f} s ({us(per_test)}/test), timeout-signal "
            f"{signal_.wall:.3f} s ({us(signal_per_test)}/test)",
            expiry.wall <= signal_.wall,
        ),
    ]


def _four(workers: int) -> list[Config]:
    return [
        Config("bare pytest", BARE, workers),
        Config("pytest-timeout, signal", TIMEOUT_SIGNAL, workers),
        Config("pytest-timeout, thread", TIMEOUT_THREAD, workers),
        Config("pytest-expiry", EXPIRY, workers),
    ]


def section_overhead(runner: Runner, repeats: int) -> Section:
    suite = suites.write(WORK / "suites" / "trivial", suites.trivial(TESTS))
    configs = _four(0)
    stats = alternate(runner, suite, configs, repeats, f"{TESTS} passed")
    rows = _overhead_rows(stats, lambda c: configs[0])
    text = _overhead_text(repeats) + "\n\n" + table(_OVERHEAD_HEADERS, rows)
    return Section("Per-test overhead", text, _ratio_targets(stats, configs, ""))


def section_xdist(runner: Runner, repeats: int) -> Section:
    suite = suites.write(WORK / "suites" / "trivial", suites.trivial(TESTS))
    four = _four(2)
    scaling = [Config(c.name, c.args, n) for n in (1, 4) for c in (four[0], four[3])]
    configs = four + scaling
    stats = alternate(runner, suite, configs, repeats, f"{TESTS} passed")
    bare = {c.workers: c for c in configs if c.args == BARE}
    ordered = dict(sorted(stats.items(), key=lambda kv: (kv[0].workers, configs.index(kv[0]))))
    rows = _overhead_rows(ordered, lambda c: bare[c.workers])
    targets = _ratio_targets(stats, four, " (xdist -n 2)")
    added = {
        c.workers: (stats[c].cpu - stats[bare[c.workers]].cpu) / TESTS
        for c in configs
        if c.args == EXPIRY
    }
    spread = max(added.values()) - min(added.values())
    allowed = max(FLAT_MARGIN_US / 1e6, FLAT_FRACTION * abs(added[1]))
    targets.append(
        Target(
            "cost per test at 1, 2, 4 workers",
            f"flat: CPU added per test within {FLAT_FRACTION:.0%} (or {FLAT_MARGIN_US:g} µs) "
            "of -n 1's",
            " / ".join(f"-n {n}: {us(added[n])}" for n in sorted(added)),
            spread <= allowed,
        )
    )
    text = (
        _overhead_text(repeats)
        + " With pytest-xdist: `-n N` added to every command; each configuration is compared "
        "with bare pytest at the same `-n`. Wall time is what the parallel run takes, so wall "
        "µs per test shrink with workers; CPU µs per test are the cost per test.\n\n"
        + table(_OVERHEAD_HEADERS, rows)
    )
    return Section("Per-test overhead under pytest-xdist", text, targets)


def section_startup(runner: Runner, repeats: int) -> Section:
    suite = suites.write(WORK / "suites" / "one", suites.one())
    configs = [Config("bare pytest", BARE), Config("pytest-expiry", EXPIRY)]
    stats = alternate(runner, suite, configs, repeats, "1 passed")
    bare, expiry = stats[configs[0]], stats[configs[1]]
    rows = [
        [
            c.name,
            f"{s.wall * 1e3:.0f} ms",
            s.range_text(),
            ms(s.wall - bare.wall),
            f"{s.cpu * 1e3:.0f} ms",
            ms(s.cpu - bare.cpu),
        ]
        for c, s in stats.items()
    ]
    added = expiry.wall - bare.wall
    text = (
        f"A session of one passing test; wall clock of the whole command, median of {repeats} "
        "alternated runs; CPU: user + system time of pytest and of the processes it waited for "
        "(pytest-expiry's watchdog).\n\n"
        + table(
            [
                "configuration",
                "wall, median",
                "wall, range",
                "wall added",
                "CPU, median",
                "CPU added",
            ],
            rows,
        )
    )
    target = Target("start-up", "≤ 50 ms added", f"{ms(added)} added", added <= STARTUP_ADDED)
    return Section("Start-up", text, [target])


def _times(path: Path) -> dict[str, dict[str, Any]]:
    """nodeid -> {"start": t, "<when>": t, "<when>_outcome": outcome} from the conftest."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written right now
        entry = found.setdefault(record["nodeid"], {})
        entry[record["what"]] = record["t"]
        if record["outcome"]:
            entry[record["what"] + "_outcome"] = record["outcome"]
    return found


def _report_events(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    document = json.loads(path.read_text())
    return {event["nodeid"]: event for event in document.get("events", [])}


def _spread(values: Sequence[float]) -> str:
    return f"{ms(statistics.median(values))} / {ms(max(values))}"


def section_latency(runner: Runner, repeats: int) -> Section:
    title = "Detection latency"
    kinds = ("sleep", "hung-child", "python-loop")
    suite = suites.write(WORK / "suites" / "hangs", suites.hangs(repeats))
    times_path, report_path = suite / "times.jsonl", suite / "report.json"
    args = ["-p", "no:timeout", f"--expiry={HANG_DEADLINE}", f"--expiry-report={report_path}"]
    done = runner.pytest(suite, args, env={suites.TIMES_ENV: str(times_path)}).wait()
    runner.clean_up()
    targets = [f"detection latency, {kind}" for kind in kinds]
    if done.returncode != 1:
        return not_measured(title, f"pytest ended with {done.returncode}:\n{done.tail()}", targets)
    times, events = _times(times_path), _report_events(report_path)
    rows, found_targets = [], []
    for kind in kinds:
        raised, failed = [], []
        for nodeid, entry in times.items():
            if f"[{kind}" not in nodeid:
                continue
            deadline_at = entry["start"] + HANG_DEADLINE
            if entry.get("call_outcome") == "failed" and "call" in entry:
                failed.append(entry["call"] - deadline_at)
            if nodeid in events:
                raised.append(events[nodeid]["elapsed"] - HANG_DEADLINE)
        if not failed:
            found_targets.append(Target(f"detection latency, {kind}", "", "no failure seen", None))
            continue
        rows.append([kind, len(failed), _spread(raised) if raised else "-", _spread(failed)])
        median = statistics.median(failed)
        found_targets.append(
            Target(
                f"detection latency, {kind}",
                "deadline → test failed ≤ 50 ms (median)",
                f"{ms(median)} (max {ms(max(failed))})",
                median <= SOFT_LATENCY,
            )
        )
    text = (
        f"One session, deadline {HANG_DEADLINE} s (`--expiry={HANG_DEADLINE}`), {repeats} tests "
        "of each kind, interleaved: `time.sleep(3600)`; `multiprocessing.Process(target="
        "time.sleep, args=(3600,))` started and joined; `while True: pass`. The deadline passes "
        "at the test's start (`pytest_runtest_logstart`, just after the scope is armed) + "
        f"{HANG_DEADLINE} s. *Expired raised*: the report's `elapsed` - deadline (the plugin's "
        "own clock). *test failed*: when the call phase's failed report reached "
        "`pytest_runtest_logreport` - deadline, i.e. with the watchdog's account (stacks, tree "
        "kill) attached.\n\n"
        + table(
            [
                "hang",
                "tests",
                "Expired raised after deadline (median / max)",
                "test failed after deadline (median / max)",
            ],
            rows,
        )
    )
    return Section(title, text, found_targets)


def section_hardkill(runner: Runner, repeats: int) -> Section:
    title = "Hard kill of a GIL-held C loop"
    what = "hard kill, GIL-held C loop"
    suite = suites.write(WORK / "suites" / "gil", suites.gil())
    latencies: list[float] = []
    for i in range(repeats):
        times_path, report_path = suite / f"times-{i}.jsonl", suite / f"report-{i}.json"
        args = [
            "-p",
            "no:timeout",
            f"--expiry={HANG_DEADLINE}",
            f"--expiry-grace={HARD_GRACE}",
            f"--expiry-report={report_path}",
        ]
        done = runner.pytest(suite, args, timeout=60, env={suites.TIMES_ENV: str(times_path)})
        finished = done.wait()
        runner.clean_up()
        start = _times(times_path).get("test_gil.py::test_gil_held_c_loop", {}).get("start")
        if finished.timed_out or start is None:
            reason = (
                "the session was not killed within 60 s"
                if finished.timed_out
                else ("the test never started")
            )
            return not_measured(title, f"{reason}:\n{finished.tail()}", [what])
        if finished.returncode != -signal.SIGKILL:
            return not_measured(
                title,
                f"pytest ended with exit code {finished.returncode}, it was not killed "
                f"(SIGKILL):\n{finished.tail()}",
                [what],
            )
        latencies.append(finished.ended_at - (start + HANG_DEADLINE))
        log(f"  run {i + 1}/{repeats}: {ms(latencies[-1])}")
    budget = HARD_GRACE + HARD_MARGIN
    median = statistics.median(latencies)
    text = (
        f"A test running `sum(range(10**15))` (C code holding the GIL, never returning to the "
        f"eval loop, so no Python signal handler can run), deadline {HANG_DEADLINE} s, grace "
        f"{HARD_GRACE:g} s (`--expiry-grace={HARD_GRACE:g}`), without xdist, so the watchdog "
        f"kills the pytest process itself. Measured from outside: the bench is pytest's parent "
        f"and notes when it dies (`waitid`), minus the deadline (test start + "
        f"{HANG_DEADLINE} s). {repeats} sessions.\n\n"
        + table(
            ["runs", "deadline → process killed, median", "min", "max", "grace"],
            [
                [
                    len(latencies),
                    ms(median),
                    ms(min(latencies)),
                    ms(max(latencies)),
                    f"{HARD_GRACE:g} s",
                ]
            ],
        )
    )
    target = Target(
        what,
        f"deadline → death ≤ grace + {HARD_MARGIN * 1e3:.0f} ms",
        f"{ms(median)} (grace {HARD_GRACE:g} s; max {ms(max(latencies))})",
        median <= budget,
    )
    return Section(title, text, [target])


def _alive(pids: dict[int, bytes | None]) -> list[int]:
    if Path("/proc/self/stat").exists():
        return [pid for pid, start in pids.items() if start and start_time(pid) == start]
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.Error:
            pass
    return alive


class TreeWatcher(threading.Thread):
    """Follows the tree-kill session: for each pids file a test writes, waits for the
    deadline, then polls until every pid is dead and notes when."""

    def __init__(self, pids_dir: Path, times_path: Path) -> None:
        super().__init__(daemon=True)
        self._pids_dir, self._times_path = pids_dir, times_path
        self.results: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        seen: set[str] = set()
        while not self.stop.is_set():
            fresh = sorted(p for p in self._pids_dir.glob("*.json") if p.name not in seen)
            if not fresh:
                time.sleep(0.02)
                continue
            path = fresh[0]
            seen.add(path.name)
            self._follow(json.loads(path.read_text()))

    def _follow(self, record: dict[str, Any]) -> None:
        pids = {pid: start_time(pid) for pid in record["pids"]}
        start = None
        while start is None and not self.stop.is_set():
            start = _times(self._times_path).get(record["nodeid"], {}).get("start")
            time.sleep(0.005)
        if start is None:
            return
        deadline_at = start + TREE_DEADLINE
        time.sleep(max(0.0, deadline_at - 0.02 - time.monotonic()))
        give_up = deadline_at + TREE_GRACE + 10
        alive = _alive(pids)
        while alive and time.monotonic() < give_up and not self.stop.is_set():
            time.sleep(0.002)
            alive = [pid for pid in alive if pid in _alive({pid: pids[pid]})]
        self.results.append(
            {
                "nodeid": record["nodeid"],
                "ready_before_deadline": record["t"] < deadline_at,
                "latency": time.monotonic() - deadline_at if not alive else None,
                "survivors": len(alive),
                "count": len(pids),
            }
        )


def section_tree(runner: Runner, repeats: int) -> Section:
    title = "Tree kill"
    variants = ("obeys-sigterm", "ignores-sigterm")
    whats = ["tree kill, descendants obey SIGTERM", "tree kill, descendants ignore SIGTERM"]
    suite = suites.write(
        WORK / "suites" / "tree", suites.tree(repeats, TREE_CHILDREN, TREE_GRANDCHILDREN)
    )
    pids_dir, times_path = suite / "pids", suite / "times.jsonl"
    pids_dir.mkdir()
    args = ["-p", "no:timeout", f"--expiry={TREE_DEADLINE:g}", f"--expiry-grace={TREE_GRACE:g}"]
    env = {suites.TIMES_ENV: str(times_path), suites.PIDS_ENV: str(pids_dir)}
    session = runner.pytest(suite, args, env=env, timeout=120)
    watcher = TreeWatcher(pids_dir, times_path)
    watcher.start()
    done = session.wait()
    give_up = time.monotonic() + TREE_GRACE + 5
    while len(watcher.results) < len(list(pids_dir.glob("*.json"))):
        if time.monotonic() > give_up:
            break
        time.sleep(0.05)
    watcher.stop.set()
    watcher.join()
    runner.clean_up()
    if done.returncode != 1 or len(watcher.results) != 2 * repeats:
        return not_measured(
            title,
            f"pytest ended with {done.returncode} after {len(watcher.results)} of "
            f"{2 * repeats} trees:\n{done.tail()}",
            whats,
        )
    rows, targets = [], []
    total = TREE_CHILDREN * (1 + TREE_GRANDCHILDREN)
    for variant, what in zip(variants, whats, strict=True):
        results = [r for r in watcher.results if f"[{variant}" in r["nodeid"]]
        latencies = [r["latency"] for r in results if r["latency"] is not None]
        survivors = sum(r["survivors"] for r in results)
        late = sum(not r["ready_before_deadline"] for r in results)
        budget = TREE_LATENCY + (TREE_GRACE if variant == "ignores-sigterm" else 0.0)
        if not latencies or late:
            why = f"{late} trees were not up before the deadline" if late else "none died"
            targets.append(Target(what, "", f"not measured: {why}", None))
            continue
        median = statistics.median(latencies)
        rows.append([variant, len(results), total, ms(median), ms(max(latencies)), survivors])
        target = f"deadline → all dead ≤ {ms(budget)}" + (
            f" (200 ms + grace {TREE_GRACE:g} s)" if variant == "ignores-sigterm" else ""
        )
        targets.append(
            Target(
                what,
                target,
                f"{ms(median)} (max {ms(max(latencies))})"
                + (f", {survivors} survived" if survivors else ""),
                median <= budget and not survivors,
            )
        )
    text = (
        f"A test starts {TREE_CHILDREN} Python processes that start {TREE_GRANDCHILDREN} each "
        f"({total} hung descendants, all sleeping), writes their pids once all are up, and "
        f"hangs; deadline {TREE_DEADLINE:g} s, grace {TREE_GRACE:g} s. The bench polls /proc "
        "every 2 ms from the deadline on until every pid is dead (gone or a zombie). Variant: "
        f"every descendant ignores SIGTERM, so only SIGKILL after the grace ends it. {repeats} "
        "trees of each variant, in one session.\n\n"
        + table(
            ["variant", "trees", "descendants", "deadline → all dead, median", "max", "survivors"],
            rows,
        )
    )
    return Section(title, text, targets)


def _sample(process: psutil.Process) -> tuple[float, float, int]:
    return time.monotonic(), cpu_seconds(process), wakeups(process.pid)


def section_idle(runner: Runner, seconds: float) -> Section:
    title = "Watchdog cost"
    what = "watchdog CPU over an idle test"
    suite = suites.write(WORK / "suites" / "idle", suites.idle(seconds))
    times_path = suite / "times.jsonl"
    args = ["-p", "no:timeout", "--expiry=60"]
    session = runner.pytest(suite, args, env={suites.TIMES_ENV: str(times_path)})
    try:
        give_up = time.monotonic() + 60
        while (start := _times(times_path).get("test_idle.py::test_idle", {}).get("start")) is None:
            if time.monotonic() > give_up:
                raise BenchError("the idle test did not start within 60 s")
            time.sleep(0.05)
        watchdogs = [
            child
            for child in psutil.Process(session.pid).children(recursive=True)
            if "pytest_expiry.watchdog" in " ".join(child.cmdline())
        ]
        if len(watchdogs) != 1:
            raise BenchError(f"expected one watchdog process, found {len(watchdogs)}")
        watchdog = watchdogs[0]
        time.sleep(max(0.0, start + 0.5 - time.monotonic()))
        t0, cpu0, wake0 = _sample(watchdog)
        time.sleep(max(0.0, start + seconds - 0.5 - time.monotonic()))
        t1, cpu1, wake1 = _sample(watchdog)
        memory = watchdog.memory_full_info()
        threads = watchdog.num_threads()
    except (BenchError, psutil.Error) as error:
        session.wait()
        runner.clean_up()
        return not_measured(title, str(error), [what])
    done = session.wait()
    runner.clean_up()
    if done.returncode != 0:
        return not_measured(title, f"pytest ended with {done.returncode}:\n{done.tail()}", [what])
    window = t1 - t0
    percent = 100 * (cpu1 - cpu0) / window
    mib = 1024 * 1024
    text = (
        f"A test that sleeps {seconds:g} s under `--expiry=60`. The watchdog (the child of "
        "pytest running `-m pytest_expiry.watchdog`) is sampled 0.5 s after the test starts "
        "and 0.5 s before it ends: CPU time (all threads, from /proc/PID/task/*/schedstat), "
        "voluntary context "
        "switches of all its threads (wake-ups), and its memory at the end (RSS; USS = "
        "memory no other process shares).\n\n"
        + table(
            ["window", "CPU", "CPU time", "wake-ups", "RSS", "USS", "threads"],
            [
                [
                    f"{window:.1f} s",
                    f"{percent:.3f} %",
                    ms(cpu1 - cpu0),
                    f"{wake1 - wake0} ({(wake1 - wake0) / window:.2f}/s)",
                    f"{memory.rss / mib:.1f} MiB",
                    f"{memory.uss / mib:.1f} MiB",
                    threads,
                ]
            ],
        )
    )
    target = Target(
        what,
        f"≈ 0 % (≤ {IDLE_CPU_PERCENT:g} %)",
        f"{percent:.3f} %, RSS {memory.rss / mib:.1f} MiB",
        percent <= IDLE_CPU_PERCENT,
    )
    return Section(title, text, [target])


def section_hotpath(runner: Runner, repeats: int, tests: int) -> Section:
    title = "Where the per-test time goes (hot-path micro-benchmark)"
    script = Path(__file__).with_name("hotpath.py")
    command = [sys.executable, str(script), "--tests", str(tests), "--repeats", str(repeats)]
    done = Job(command, WORK, runner.env, 300).wait()
    runner.clean_up()
    if done.returncode != 0:
        return not_measured(title, f"bench/hotpath.py failed:\n{done.tail()}")
    result = json.loads(done.output.strip().splitlines()[-1])
    rows = [
        [
            name,
            us(v["client_cpu"], sign=False),
            us(v["watchdog_cpu"], sign=False),
            us(v["wall"], sign=False),
            f"{v['preempted']:.2f}",
        ]
        for name, v in result["variants"].items()
    ]
    text = (
        f"`bench/hotpath.py`: {tests} simulated tests in one process, each one "
        f"{result['gap_us']:g} µs of busy work (about what pytest spends on a trivial test) "
        "plus what the variant does, against a real watchdog process; medians of "
        f"{repeats} runs, per test. The test process's CPU and wall time are net of the busy "
        "work; *preempted*: involuntary context switches of the test process per test (the "
        "watchdog waking up on its CPU). The CPU columns are the stable ones; wall time follows "
        "the machine's load. *back to back*: no gap, scopes armed and released as fast as the "
        "test process can.\n\n"
        + table(["variant", "test process CPU", "watchdog CPU", "wall added", "preempted"], rows)
    )
    return Section(title, text)


# --------------------------------------------------------------------------- the report


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _installed_revision() -> str:
    try:
        return INSTALLED.read_text().strip()
    except OSError:
        return "unknown revision"


def machine(loads: Sequence[float]) -> str:
    memory = psutil.virtual_memory().total / 1024**3
    rows = [
        [
            "CPU",
            f"{_cpu_model()}, {os.cpu_count()} logical cores "
            f"({psutil.cpu_count(logical=False)} physical), {memory:.0f} GiB",
        ],
        ["OS", platform.platform()],
        ["Python", f"{platform.python_version()} ({platform.python_implementation()})"],
        ["pytest", _version("pytest")],
        ["pytest-expiry", f"{_version('pytest-expiry')} (repository at {_installed_revision()})"],
        ["pytest-timeout", _version("pytest-timeout")],
        ["pytest-xdist", _version("pytest-xdist")],
        ["psutil", _version("psutil")],
        ["load average (1 min) during the run", f"{min(loads):.2f}-{max(loads):.2f}"],
    ]
    return table(["machine", ""], rows)


def render(
    *,
    command: str,
    started: datetime,
    seconds: float,
    loads: Sequence[float],
    sections: Sequence[Section],
    leftovers: Leftovers,
) -> str:
    targets = [t for s in sections for t in s.targets]
    counts = {v: sum(t.ok is v for t in targets) for v in (True, False, None)}
    parts = [
        "# pytest-expiry benchmark",
        f"Produced by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min. "
        "Machines are noisy: compare the ratios within this run, not absolute times across "
        "runs. Regenerate with the same command (see bench/README.md).",
        machine(loads),
        "## Targets",
        f"{counts[True]} met, {counts[False]} missed, {counts[None]} not measured.",
        table(
            ["what", "target", "measured", ""],
            [[t.what, t.target, t.measured, met(t.ok)] for t in targets],
        ),
    ]
    for section in sections:
        parts += [f"## {section.title}", section.text.strip()]
    killed, lingered = leftovers.killed, leftovers.lingered
    parts += [
        "## Processes left behind",
        f"Killed by the bench because they were still running {CLEAN_UP_WAIT:g} s after their "
        f"session: {len(killed)}" + (f" ({_counted(killed)})" if killed else "") + ". "
        f"Outlived their session but ended by themselves within {CLEAN_UP_WAIT:g} s: "
        f"{len(lingered)}" + (f" ({_counted(lingered)})" if lingered else "") + ".",
    ]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    options = build_parser().parse_args()
    quick = options.quick
    repeats = options.repeats or (3 if quick else 7)
    chosen = options.only.split(",") if options.only else list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"bench: unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    output = (
        Path(options.output)
        if options.output
        else (QUICK_RESULTS if quick or options.only else RESULTS)
    )
    command = "python3 bench/run.py" + "".join(f" {a}" for a in sys.argv[1:])
    started = datetime.now(timezone.utc)
    began = time.monotonic()
    runner = Runner()
    loads = [os.getloadavg()[0]]
    plan: dict[str, Callable[[], Section]] = {
        "overhead": lambda: section_overhead(runner, options.repeats or (3 if quick else 11)),
        "xdist": lambda: section_xdist(runner, options.repeats or (2 if quick else 9)),
        "startup": lambda: section_startup(runner, 3 * repeats),
        "latency": lambda: section_latency(runner, repeats),
        "hardkill": lambda: section_hardkill(runner, repeats),
        "tree": lambda: section_tree(runner, 1 if quick else 3),
        "idle": lambda: section_idle(runner, 10.0 if quick else 30.0),
        "hotpath": lambda: section_hotpath(runner, repeats, 1000 if quick else TESTS),
    }
    sections = []
    try:
        for name in SECTIONS:
            if name not in chosen:
                continue
            log(f"{name} ...")
            try:
                sections.append(plan[name]())
            except BenchError as error:
                sections.append(not_measured(f"{name} (failed)", str(error), [name]))
            loads.append(os.getloadavg()[0])
    finally:
        runner.clean_up()
    text = render(
        command=command,
        started=started,
        seconds=time.monotonic() - began,
        loads=loads,
        sections=sections,
        leftovers=runner.leftovers,
    )
    sys.stdout.write(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    log(f"written to {output}")


if __name__ == "__main__":
    main()
