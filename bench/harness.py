"""The bench's harness: pytest commands in generated suites, alternated configurations and
their medians, /proc readings, and the clean-up of what hung sessions leave behind.

Every command is ``PYTHON -m pytest -p no:cacheprovider -q ARGS`` in a session of its own,
in an environment without ``PYTEST_*``/``PYTHON*`` variables and with a token that every
descendant inherits, so that leftovers can be found (even detached ones) and killed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

TOKEN_ENV = "PYTEST_EXPIRY_BENCH_TOKEN"
BASE = ("-p", "no:cacheprovider", "-q")


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")


class BenchError(Exception):
    """A command did not do what the measurement needs: the row is not measured."""


@dataclass
class Done:
    returncode: int
    wall: float  # seconds, start to exit
    cpu: float  # user + system of pytest and of the descendants it waited for
    ended_at: float  # time.monotonic() at exit
    output: str

    def tail(self) -> str:
        return "\n".join(self.output.splitlines()[-12:])


class Job:
    """A running command; its process group is killed after ``timeout``."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], timeout: float):
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._timer = threading.Timer(timeout, os.killpg, [self.process.pid, signal.SIGKILL])
        self._timer.daemon = True
        self._timer.start()

    def wait(self) -> Done:
        # not reaped until the timer is off: its pid and group cannot go to another process
        os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)
        ended_at, wall = time.monotonic(), time.perf_counter() - self.started
        self._timer.cancel()
        _, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._out.seek(0)
        output = self._out.read().decode(errors="replace")
        self._out.close()
        cpu = usage.ru_utime + usage.ru_stime
        return Done(self.process.returncode, wall, cpu, ended_at, output)


@dataclass
class Stats:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    noted: list[float] = field(default_factory=list)  # what the runs wrote to their note

    def of(self, what: str) -> float:
        return statistics.median({"wall": self.walls, "cpu": self.cpus, "noted": self.noted}[what])


class Runner:
    def __init__(self, python: str) -> None:
        self.python, self.token, self.killed = python, uuid.uuid4().hex, 0
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHON"))}
        self.env[TOKEN_ENV] = self.token

    def start(
        self, suite: Path, args: Sequence[str], env: Mapping[str, str] = {}, timeout: float = 600
    ) -> Job:
        command = [self.python, "-m", "pytest", *BASE, *args]
        return Job(command, suite, {**self.env, **env}, timeout)

    def run(
        self, suite: Path, args: Sequence[str], expect: str, env: Mapping[str, str] = {}
    ) -> Done:
        done = self.start(suite, args, env).wait()
        if done.returncode != 0 or expect not in done.output:
            command = " ".join(args)
            raise BenchError(f"`pytest {command}` ended with {done.returncode}:\n{done.tail()}")
        return done

    def alternate(
        self,
        suite: Path,
        configs: Mapping[str, Sequence[str]],
        repeats: int,
        expect: str,
        *,
        note_env: str = "",
    ) -> dict[str, Stats]:
        """Every configuration ``repeats`` times, round by round, the order rotating each
        round (so load drift hits all alike), after an untimed ``--collect-only`` that writes
        the suite's bytecode. With ``note_env``, each run gets a file of its own in that
        variable, and the numbers it writes there, one a line, go to ``Stats.noted``."""
        names = list(configs)
        self.start(suite, [*configs[names[0]], "--collect-only"]).wait()
        stats = {name: Stats() for name in names}
        note = suite / "note.txt"
        env = {note_env: str(note)} if note_env else {}
        for round_ in range(repeats):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                note.unlink(missing_ok=True)
                done = self.run(suite, configs[name], expect, env)
                stats[name].walls.append(done.wall)
                stats[name].cpus.append(done.cpu)
                if note_env:
                    stats[name].noted += [float(line) for line in note.read_text().split()]
        return stats

    def ours(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                mine = process.pid != os.getpid() and process.status() != psutil.STATUS_ZOMBIE
                if mine and process.environ().get(TOKEN_ENV) == self.token:
                    found.append(process)
        return found

    def clean_up(self, wait: float = 3.0) -> None:
        """Give the processes that carry our token ``wait`` seconds to end, then kill them."""
        end = time.monotonic() + wait
        while (found := self.ours()) and time.monotonic() < end:
            time.sleep(0.1)
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.kill()
                self.killed += 1
        psutil.wait_procs(found, timeout=3)


def cpu_seconds(pid: int) -> float:
    """CPU time of all of ``pid``'s threads (nanoseconds in /proc/PID/task/*/schedstat)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(stat.read_text().split()[0])
    return total / 1e9


def times(path: Path) -> dict[str, dict[str, float]]:
    """``nodeid -> {"start": t, "call:failed": t, ...}`` from the suites' conftest."""
    found: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError, KeyError):
            record = json.loads(line)
            found.setdefault(record["nodeid"], {})[record["what"]] = record["t"]
    return found
