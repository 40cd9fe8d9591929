#!/usr/bin/env python3
"""The pytest-expiry benchmark: a table of rows (name, generated suite, pytest args, target),
each measured side by side with bare pytest in the same run, printed and written to
bench/RESULTS.md through bench/RESULTS.template.md (see bench/README.md)::

    python3 bench/run.py --quick    # under 3 minutes
    python3 bench/run.py            # full: more repeats, 30000 tests for the slope
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from string import Template
from typing import NoReturn

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"


def _reexec() -> NoReturn:
    """Not the interpreter pytest-expiry is installed in: hand over to the repository's venv."""
    venv = BENCH.parent / ".venv" / "bin" / "python"
    if venv.exists() and Path(sys.executable) != venv:
        os.execv(venv, [str(venv), *sys.argv])
    raise SystemExit("bench: run it with the python that has pytest-expiry installed")


try:
    import harness
    import suites
    from harness import BenchError, Runner, Stats
except ImportError:
    _reexec()

BARE = ("-p", "no:expiry", "-p", "no:timeout")
EXPIRY = ("-p", "no:timeout", "--expiry=30")
TIMEOUT = ("-p", "no:expiry", "-p", "timeout", "--timeout=30", "--timeout-method=signal")
DEADLINE, GRACE, TREE_DEADLINE, SMALL = 0.5, 1.0, 4.0, 3000
VERDICT = {True: "**met**", False: "**missed**", None: "not measured"}


@dataclass
class Ctx:
    runner: Runner
    quick: bool
    repeats: int | None = None  # instead of the defaults
    tests: int | None = None  # instead of the 3000 trivial tests (the other sizes scale)
    timeout: bool = find_spec("pytest_timeout") is not None
    cache: dict[str, dict[str, Stats]] = field(default_factory=dict)
    raw: list[list[str]] = field(default_factory=list)

    def reps(self, heavy: bool = False) -> int:
        return self.repeats or ((2 if heavy else 3) if self.quick else (5 if heavy else 9))

    def compare(self, label: str, files: suites.Files, configs: dict[str, tuple[str, ...]],
                expect: str, repeats: int, *, note_env: str = "") -> dict[str, Stats]:  # fmt: skip
        """The configurations alternated in a suite (once per label: rows share runs)."""
        if label not in self.cache:
            if any("-n" in args for args in configs.values()) and not find_spec("xdist"):
                raise BenchError("pytest-xdist is not installed")
            harness.log(f"  {label}: {len(configs)} configurations x {repeats}")
            suite = suites.write(WORK / "suites" / label.replace(" ", "_"), files)
            runs = self.runner.alternate(suite, configs, repeats, expect, note_env=note_env)
            self.cache[label] = runs
            self.raw += [[label, name, " ".join(configs[name]), str(len(s.walls)),
                          f"{s.of('wall'):.3f} s", f"{min(s.walls):.3f}-{max(s.walls):.3f} s",
                          f"{s.of('cpu'):.3f} s"]
                         for name, s in self.cache[label].items()]  # fmt: skip
        return self.cache[label]


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    suite: Callable[[int], suites.Files]
    size: tuple[int, int]  # tests (or seconds, children), with --quick and without
    args: tuple[str, ...]
    target: str
    limit: float
    measure: Callable[[Ctx, Row], tuple[str, bool]]

    def tests(self, ctx: Ctx) -> int:
        n = self.size[0 if ctx.quick else 1]
        n = n * ctx.tests // SMALL if ctx.tests and n >= 1000 else n
        return max(40, n // 40 * 40) if self.suite is suites.realworld else n

    def versus_bare(self, ctx: Ctx, timeout: bool = False) -> dict[str, Stats]:
        """bare pytest, pytest-expiry (and pytest-timeout) with this row's args."""
        n = self.tests(ctx)
        configs = {"bare": (*self.args, *BARE), "expiry": (*self.args, *EXPIRY)}
        if timeout and ctx.timeout:
            configs["timeout-signal"] = (*self.args, *TIMEOUT)
        label = f"{self.suite.__name__} {n} {' '.join(self.args)}".strip()
        heavy = n > SMALL or bool(self.args)
        return ctx.compare(label, self.suite(n), configs, f"{n} passed", ctx.reps(heavy))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def added(s: dict[str, Stats], what: str, config: str = "expiry", bare: str = "bare") -> float:
    return s[config].of(what) - s[bare].of(what)


def ratio(ctx: Ctx, row: Row) -> tuple[str, bool]:
    s = row.versus_bare(ctx, timeout=row.suite is suites.trivial)
    bare, expiry = s["bare"].of("wall"), s["expiry"].of("wall")
    text = f"{expiry / bare:.3f}x ({bare:.3f} s → {expiry:.3f} s)"
    if "timeout-signal" in s:
        text += f"; pytest-timeout {s['timeout-signal'].of('wall') / bare:.3f}x"
    if row.key == "plain":
        text += f"; goal 1.02 {'met' if expiry / bare <= 1.02 else 'not yet'}"
    return text, expiry / bare <= row.limit


def beats_timeout(ctx: Ctx, row: Row) -> tuple[str, bool]:
    if not ctx.timeout:
        raise BenchError(f"pytest-timeout is not installed in {sys.executable}")
    s = row.versus_bare(ctx, timeout=True)
    expiry, timeout = s["expiry"].of("wall"), s["timeout-signal"].of("wall")
    return f"{expiry:.3f} s vs {timeout:.3f} s ({expiry / timeout:.3f}x)", expiry < timeout


def slope(ctx: Ctx, row: Row) -> tuple[str, bool]:
    """Added per test between the two sizes: start-up and the other fixed costs cancel out."""
    small, big = PLAIN.tests(ctx), row.tests(ctx)
    a, b = PLAIN.versus_bare(ctx, timeout=True), row.versus_bare(ctx)
    wall, cpu = ((added(b, w) - added(a, w)) / (big - small) for w in ("wall", "cpu"))
    return f"{wall * 1e6:+.1f} µs/test ({small} → {big}; CPU {cpu * 1e6:+.1f} µs)", wall <= 5e-6


def per_worker(ctx: Ctx, row: Row) -> tuple[str, bool]:
    """The CPU each xdist worker used up to its first test, which it reports itself: the
    median of pytest-expiry's workers less the median of bare pytest's (the controller's
    share, and the watchdog's, are not in it)."""
    configs = {c: (*row.args, *a) for c, a in (("bare", BARE), ("expiry", EXPIRY))}
    n = row.tests(ctx)
    label, expect = f"workers {n}", f"{n} passed"
    s = ctx.compare(label, row.suite(n), configs, expect, 2 * ctx.reps(), note_env=suites.NOTE_ENV)
    if not (s["bare"].noted and s["expiry"].noted):
        raise BenchError(f"the workers did not note their CPU in ${suites.NOTE_ENV}")
    per = added(s, "noted")
    workers = len(s["expiry"].noted)
    return f"{ms(per)} CPU per worker up to its first test ({workers} workers)", per <= row.limit


def startup(ctx: Ctx, row: Row) -> tuple[str, bool]:
    configs = {"bare": BARE, "expiry": EXPIRY}
    s = ctx.compare("one test", suites.trivial(1), configs, "1 passed", 3 * ctx.reps())
    wall = added(s, "wall")
    return f"+{ms(wall)} wall (CPU +{ms(added(s, 'cpu'))})", wall <= row.limit


def hang(ctx: Ctx, row: Row, fifo: int = 0) -> tuple[harness.Done, dict[str, float], float]:
    """A session of the row's hanging suite: its exit, the times of its (last) test, and when
    the ``fifo`` descendants were all dead (they hold the FIFO open: EOF then)."""
    suite = suites.write(WORK / "suites" / row.key, row.suite(row.tests(ctx)))
    env = {suites.TIMES_ENV: str(suite / "times.jsonl"), suites.FIFO_ENV: str(suite / "fifo")}
    os.mkfifo(suite / "fifo")
    reader = os.open(suite / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    job, dead_at, pids = ctx.runner.start(suite, row.args, env, timeout=120), 0.0, 0
    while fifo and not dead_at and job.process.poll() is None:
        select.select([reader], [], [], 0.05)
        try:
            chunk = os.read(reader, 4096)
        except BlockingIOError:
            continue  # descendants alive, nothing written
        pids += chunk.count(b"\n")
        if not chunk and pids >= fifo:  # EOF once all were up: all dead
            dead_at = time.monotonic()
        elif not chunk:
            time.sleep(0.002)  # none has opened the FIFO yet
    done = job.wait()
    os.close(reader)
    ctx.runner.clean_up()
    ctx.cache[row.key] = {}
    times = harness.times(suite / "times.jsonl")
    return done, times[max(times)] if times else {}, dead_at


def latency(ctx: Ctx, row: Row) -> tuple[str, bool]:
    done, _, _ = hang(ctx, row)
    by_kind: dict[str, list[float]] = {}
    for nodeid, t in harness.times(WORK / "suites" / row.key / "times.jsonl").items():
        kind = nodeid.split("[")[1].rstrip("]0123456789")
        by_kind.setdefault(kind, []).append(t.get("call:failed", 1e9) - t["start"] - DEADLINE)
    if done.returncode != 1 or len(by_kind) != 3:
        raise BenchError(f"pytest ended with {done.returncode}:\n{done.tail()}")
    medians = {kind: statistics.median(v) for kind, v in sorted(by_kind.items())}
    text = ", ".join(f"{kind} {ms(m)}" for kind, m in medians.items())
    return text + " (medians)", max(medians.values()) <= row.limit


def kill(ctx: Ctx, row: Row) -> tuple[str, bool]:
    """The deadline → the pytest process (hard kill) or every descendant (tree) is dead."""
    late, tree = [], row.suite is suites.tree
    for _ in range(max(1, ctx.reps() // 3) if tree else ctx.reps()):
        done, t, dead_at = hang(ctx, row, fifo=5 * row.tests(ctx) if tree else 0)
        if done.returncode != (1 if tree else -signal.SIGKILL) or "start" not in t:
            raise BenchError(f"not killed as expected (exit {done.returncode}):\n{done.tail()}")
        late.append((dead_at if tree else done.ended_at) - t["start"])
    deadline = TREE_DEADLINE if tree else DEADLINE
    median = statistics.median(late) - deadline
    extra = f"{5 * row.tests(ctx)} descendants" if tree else f"grace {GRACE:g} s"
    text = f"{ms(median)} ({extra}, max {ms(max(late) - deadline)})"
    return text, median <= row.limit + (0 if tree else GRACE)


def idle(ctx: Ctx, row: Row) -> tuple[str, bool]:
    seconds = row.tests(ctx)
    suite = suites.write(WORK / "suites" / "idle", suites.idle(seconds))
    times = suite / "times.jsonl"
    job = ctx.runner.start(suite, row.args, {suites.TIMES_ENV: str(times)})
    while "start" not in (t := harness.times(times).get("test_idle.py::test_idle", {})):
        if job.process.poll() is not None:
            raise BenchError(f"the idle test did not run:\n{job.wait().tail()}")
        time.sleep(0.05)
    found = [p.pid for p in ctx.runner.ours() if "pytest_expiry.watchdog.main" in p.cmdline()]
    if len(found) != 1:
        raise BenchError(f"expected one watchdog process, found {len(found)}")
    time.sleep(max(0.0, t["start"] + 0.5 - time.monotonic()))
    t0, cpu0 = time.monotonic(), harness.cpu_seconds(found[0])
    time.sleep(max(0.0, t["start"] + seconds - 0.5 - time.monotonic()))
    window, percent = time.monotonic() - t0, 100 * (harness.cpu_seconds(found[0]) - cpu0)
    job.wait()
    return f"{percent / window:.3f} % over {window:.1f} s", percent / window <= row.limit


T, R, N2, N4, S = suites.trivial, suites.realworld, ("-n", "2"), ("-n", "4"), (SMALL, SMALL)
GIL, TREE = (f"--expiry={DEADLINE}", f"--expiry-grace={GRACE}"), (f"--expiry={TREE_DEADLINE}",)
NO_TIMEOUT = "below pytest-timeout (signal)"
PLAIN = Row("plain", "plain", T, S, (), "≤ 1.03x bare (goal 1.02)", 1.03, ratio)
ROWS = [  # key, name, suite, size (--quick, full), pytest args, target, limit, measure
    PLAIN,
    Row("slope", "marginal cost per test", T, (10000, 30000), (),
        "slope from 3000 tests ≤ 5 µs/test", 5e-6, slope),
    Row("n2", "xdist -n 2", T, S, N2, "≤ 1.05x bare -n 2", 1.05, ratio),
    Row("n2-timeout", "xdist -n 2 vs pytest-timeout", T, S, N2, NO_TIMEOUT, 1, beats_timeout),
    Row("n4", "xdist -n 4", T, S, N4, "≤ 1.05x bare -n 4", 1.05, ratio),
    Row("n4-timeout", "xdist -n 4 vs pytest-timeout", T, S, N4, NO_TIMEOUT, 1, beats_timeout),
    Row("worker", "start-up per xdist worker", suites.workers, (4, 4), N4,
        "≤ 10 ms CPU per worker", 0.010, per_worker),
    Row("startup", "start-up", T, (1, 1), (), "≤ 20 ms added wall, one test", 0.020, startup),
    Row("real", "real-world suite", R, (1000, 2000), (), "≤ 1.02x bare", 1.02, ratio),
    Row("real-n2", "real-world suite, -n 2", R, (1000, 2000), N2, "≤ 1.02x bare -n 2",
        1.02, ratio),
    Row("latency", "detection latency", suites.hangs, (3, 9), GIL[:1],
        "deadline → test failed ≤ 50 ms", 0.050, latency),
    Row("tree", "tree kill", suites.tree, (10, 10), (*TREE, GIL[1]),
        "deadline → all dead ≤ 200 ms", 0.200, kill),
    Row("hardkill", "hard kill, GIL-held C loop", suites.gil, (1, 1), GIL,
        "≤ grace + 100 ms", 0.100, kill),
    Row("idle", "idle watchdog", suites.idle, (10, 30), ("--expiry=30",),
        "≈ 0 % CPU (≤ 0.1 %)", 0.1, idle),
]  # fmt: skip


def _machine(loads: Sequence[float]) -> str:
    git = ["git", "-C", str(BENCH), "log", "-1", "--format=%h"]
    revision = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    cpus = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((c.split(":", 1)[1].strip() for c in cpus if c.startswith("model name")), "?")
    names = ("pytest", "pytest-xdist", "pytest-timeout", "pytest-expiry")
    installed = {d.metadata["Name"].lower(): d.version for d in metadata.distributions()}
    versions = ", ".join(f"{n} {installed.get(n, 'not installed')}" for n in names)
    return (
        f"{model}, {os.cpu_count()} logical cores; {platform.platform()}; Python "
        f"{platform.python_version()}; {versions} (commit {revision or '?'}, as installed in "
        f"{sys.executable}); 1-min load average {min(loads):.2f}-{max(loads):.2f} during the run"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join("| " + " | ".join(r) + " |" for r in [headers, ["---"] * len(headers), *rows])


def measure(ctx: Ctx, chosen: Sequence[str], loads: list[float]) -> list[list[str]]:
    """Each row of ROWS as [name, suite, pytest args, target, measured, verdict]."""
    out = []
    for row in ROWS:
        measured, ok = "not selected (--only)", None
        if row.key in chosen:
            harness.log(f"{row.key} ...")
            try:
                measured, ok = row.measure(ctx, row)
            except BenchError as error:
                measured = "not measured: " + str(error).splitlines()[0]
                sys.stderr.write(f"{error}\n")
            harness.log(f"{row.key}: {measured} -> {VERDICT[ok]}")
            loads.append(os.getloadavg()[0])
        args = f"`{' '.join(row.args)}`" if row.args else ""
        suite = f"`{row.suite.__name__}({row.tests(ctx)})`"
        out.append([row.name, suite, args, row.target, measured, VERDICT[ok]])
    return out


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("::")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    parser.add_argument("--repeats", type=int, help="rounds of alternated runs")
    parser.add_argument("--tests", type=int, help=f"instead of {SMALL} trivial tests (scales)")
    parser.add_argument(
        "--only", help="row keys, comma-separated: " + ",".join(r.key for r in ROWS)
    )
    parser.add_argument("--output", type=Path, help="default: bench/RESULTS.md; "
                        "with --only/--tests/--repeats bench/.work/RESULTS-partial.md")  # fmt: skip
    options = parser.parse_args(argv)
    chosen = options.only.split(",") if options.only else [r.key for r in ROWS]
    if unknown := set(chosen) - {r.key for r in ROWS}:
        parser.error(f"unknown rows {sorted(unknown)}")
    partial = options.only or options.tests or options.repeats
    output = options.output or (WORK / "RESULTS-partial.md" if partial else BENCH / "RESULTS.md")
    ctx = Ctx(Runner(sys.executable), options.quick, options.repeats, options.tests)
    if not ctx.timeout:
        harness.log("pytest-timeout is not installed: its comparisons are not measured")
    began, loads = time.monotonic(), [os.getloadavg()[0]]
    try:
        rows = measure(ctx, chosen, loads)
    finally:
        ctx.runner.clean_up()
    counts = {v: sum(r[-1] == VERDICT[v] for r in rows) for v in VERDICT}
    raw_headers = ["suite", "configuration", "pytest args", "runs", "wall", "range", "CPU"]
    text = Template((BENCH / "RESULTS.template.md").read_text()).substitute(
        command=" ".join(["python3 bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        minutes=f"{(time.monotonic() - began) / 60:.1f}",
        machine=_machine(loads),
        summary=f"{counts[True]} met, {counts[False]} missed, {counts[None]} not measured",
        big=ROWS[1].tests(ctx),
        bignote="--quick uses 10000, the full run 30000" if options.quick else "full run",
        rows=table(["row", "suite", "pytest args", "target", "measured", ""], rows),
        raw=table(raw_headers, ctx.raw),
        bare=" ".join(BARE), expiry=" ".join(EXPIRY), timeout=" ".join(TIMEOUT),
        killed=ctx.runner.killed,
    )  # fmt: skip
    sys.stdout.write(text)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    harness.log(f"written to {output}")
    return text


if __name__ == "__main__":
    main()
