"""Inner pytest sessions for the end-to-end tests that need more than ``run_pytest``: a wall
clock, a process to signal, several runs compared with each other, a bound on a run that
does not end.

Every inner session (and so every process it starts) carries a fresh ``EXPIRY_TEST_TAG`` in its
environment; :meth:`InnerSessions.close` ends whatever still carries it and says what that was.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
import pytest

from pytest_expiry.timer.api import TimerRequest

NO_EXTRAS = ("-p", "no:hypothesispytest", "-p", "no:randomly")
"""Plugins of this environment an inner session does without (``-p randomly`` asks for one
back by name): every ``run_pytest`` session gets them in ``PYTEST_ADDOPTS``."""

TAG = "EXPIRY_TEST_TAG"


def nobody() -> pwd.struct_passwd:
    """The user ``nobody``, for a test that acts as another user (skipped unless root)."""
    if os.getuid() != 0:
        pytest.skip("needs root, to act as another user")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``TAG=tag``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(TAG) == tag:
                found.append(process)
        except psutil.Error:
            continue
    return found


def assert_none_left(tag: str, within: float = 3.0) -> None:
    """Fail if processes tagged ``tag`` are still alive after ``within`` seconds (and kill
    them, so that one failure does not poison the rest of the run)."""
    end = time.monotonic() + within
    left = tagged_processes(tag)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = tagged_processes(tag)
    if left:
        described = [f"{p.pid}: {' '.join(p.cmdline())}" for p in left]
        for process in left:
            process.kill()
        pytest.fail("processes left running:\n" + "\n".join(described))


def needs(module: str) -> pytest.MarkDecorator:
    """Skip unless ``module`` is installed (the compatibility job of ``.ci/run`` installs
    the plugins suites use: ``pip install '.[test,compat]'``)."""
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (the compatibility job of .ci/run installs it)",
    )


@dataclass
class Run:
    """An inner pytest run of the ``run_pytest`` fixture (tests/conftest.py): its result, wall
    time and (when asked for) JUnit tree."""

    result: pytest.RunResult
    seconds: float
    junit: ET.Element | None

    @property
    def output(self) -> str:
        return self.result.stdout.str() + "\n" + self.result.stderr.str()

    def testcase(self, name: str) -> ET.Element:
        assert self.junit is not None
        for case in self.junit.iter("testcase"):
            if case.get("name") == name:
                return case
        raise AssertionError(f"no testcase {name} in the JUnit report")


class RunPytest(Protocol):
    """The type of the ``run_pytest`` fixture (tests/conftest.py): ``run_pytest(*args,
    junit=True, timeout=120)`` runs pytest in a subprocess in the pytester directory."""

    def __call__(self, *args: str, junit: bool = True, timeout: float = 120) -> Run: ...


__all__ = [
    "NO_EXTRAS",
    "PYTEST",
    "TAG",
    "XDIST",
    "Finished",
    "InnerSessions",
    "Run",
    "RunPytest",
    "Started",
    "assert_none_left",
    "inner_env",
    "kill_tagged",
    "leaked",
    "leaked_in_phases",
    "left_running",
    "needs",
    "normalized_outcome_line",
    "tagged_processes",
]

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]

try:
    import xdist  # noqa: F401

    XDIST = True
except ImportError:  # pragma: no cover - it is in the test extras
    XDIST = False

_INHERITED_SETTINGS = ("PYTEST_ADDOPTS", "PYTEST_TIMEOUT", "PYTEST_CURRENT_TEST")
_INHERITED_PREFIXES = ("PYTEST_EXPIRY", "PYTEST_XDIST")  # set when this suite runs under us


def inner_env(tag: str, **extra: str) -> dict[str, str]:
    """This process's environment without what would reach into the inner session (our own
    session's expiry variables, pytest options), with ``TAG=tag`` and ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _INHERITED_SETTINGS and not key.startswith(_INHERITED_PREFIXES)
    }
    env[TAG] = tag
    env.update(extra)
    return env


def left_running(tag: str, within: float = 3.0) -> list[str]:
    """The processes tagged ``tag`` still alive ``within`` seconds from now, described."""
    end = time.monotonic() + within
    left = tagged_processes(tag)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = tagged_processes(tag)
    described = []
    for process in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid} ({process.status()}): {' '.join(process.cmdline())}")
    return described


def kill_tagged(tag: str) -> None:
    """SIGKILL every process tagged ``tag`` (SIGCONT first: a stopped one is ended too)."""
    for process in tagged_processes(tag):
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGCONT)
            process.kill()


_DURATION = re.compile(r" in \d+(\.\d+)?s( \([^)]*\))?")


def normalized_outcome_line(output: str) -> str:
    """The last line of a pytest run (``== 3 passed, 1 failed in 1.23s ==``) without its
    duration and padding: ``3 passed, 1 failed``."""
    lines = [line for line in output.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return _DURATION.sub("", last).strip("= ")


@dataclass
class Finished:
    """An inner session that ended (or was ended after ``timeout`` seconds)."""

    args: list[str]
    returncode: int | None  # None: it did not end within its timeout and was killed
    output: str  # stdout and stderr, interleaved as written
    seconds: float
    junit: ET.Element | None
    timeout: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def describe(self) -> str:
        ended = (
            f"did not end within {self.timeout:g} s"
            if self.timed_out
            else f"exit code {self.returncode} after {self.seconds:.2f} s"
        )
        return f"pytest {' '.join(self.args)}: {ended}; output ends with:\n{self.tail()}"

    def require_ended(self) -> None:
        if self.timed_out:
            pytest.fail(self.describe())

    def cases(self, name: str, module: str = "") -> list[ET.Element]:
        """JUnit testcases named ``name`` (or ``name[...]`` for a parametrized one), of the
        test module ``module`` if given."""
        if self.junit is None:
            pytest.fail(f"no JUnit report: {self.describe()}")
        found = []
        for case in self.junit.iter("testcase"):
            case_name, classname = case.get("name") or "", case.get("classname") or ""
            if case_name != name and not case_name.startswith(name + "["):
                continue
            if module and classname != module and not classname.startswith(module + "."):
                continue
            found.append(case)
        if not found:
            pytest.fail(f"no testcase {module}::{name} in the JUnit report: {self.describe()}")
        return found

    def outcome(self, name: str, module: str = "") -> str:
        """``passed``, ``failed`` (call), ``error`` (setup/teardown) or ``skipped``; with a
        failure and an error, ``failed``."""
        tags = {child.tag for case in self.cases(name, module) for child in case}
        for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            if tag in tags:
                return outcome
        return "passed"

    def report(self, name: str, module: str = "") -> str:
        """Messages and texts of a testcase's failures and errors."""
        parts = []
        for case in self.cases(name, module):
            for child in case:
                if child.tag in ("failure", "error"):
                    parts.append(f"{child.get('message', '')}\n{child.text or ''}")
        return "\n".join(parts)

    def seconds_of(self, name: str) -> float:
        return sum(float(case.get("time", "nan")) for case in self.cases(name))


@dataclass
class Started:
    """An inner session running in the background (its own session and process group)."""

    args: list[str]
    process: subprocess.Popen[bytes]
    log: Path
    junit_path: Path
    started_at: float
    timeout: float

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self) -> Finished:
        """Wait for the end (at most ``timeout`` seconds from the start; then it is killed)."""
        returncode: int | None
        try:
            left = max(0.0, self.timeout - (time.monotonic() - self.started_at))
            returncode = self.process.wait(left)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            returncode = None
        seconds = time.monotonic() - self.started_at
        junit = None
        if self.junit_path.exists():
            with contextlib.suppress(ET.ParseError):
                junit = ET.parse(self.junit_path).getroot()
        return Finished(self.args, returncode, self.output, seconds, junit, self.timeout)


@dataclass
class InnerSessions:
    """Runs inner sessions in ``cwd`` under one tag; :meth:`close` ends what they left."""

    cwd: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: list[Started] = field(default_factory=list)

    def write(self, name: str, source: str) -> Path:
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    def start(self, *args: str, timeout: float = 15.0, **env: str) -> Started:
        """``python -m pytest ARGS`` (with a JUnit report), stdin closed, output to a log."""
        name = uuid.uuid4().hex
        log = self.cwd / f"session-{name}.log"
        junit_path = self.cwd / f"junit-{name}.xml"
        argv = [*PYTEST, f"--junitxml={junit_path}", *args]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=inner_env(self.tag, **env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # as a terminal starts a foreground job
            )
        started = Started(list(args), process, log, junit_path, time.monotonic(), timeout)
        self.started.append(started)
        return started

    def run(self, *args: str, timeout: float = 15.0, **env: str) -> Finished:
        return self.start(*args, timeout=timeout, **env).wait()

    def leftovers(self) -> list[str]:
        """End the sessions still running, then return (and end) what their processes left."""
        for started in self.started:
            if started.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(started.process.pid, signal.SIGKILL)
                started.process.wait()
        left = left_running(self.tag)
        kill_tagged(self.tag)
        return left

    def close(self) -> None:
        left = self.leftovers()
        if left:
            pytest.fail("processes left running:\n" + "\n".join(left))


class WatchdogEnd:
    """The watchdog's end of the channel, in this process, in a fresh private directory,
    driven by hand: :meth:`poll` is one wake-up of its loop."""

    def __init__(self, mode: int = 0o700) -> None:
        from pytest_expiry.protocol.server import SocketRequestQueue  # noqa: PLC0415
        from pytest_expiry.protocol.wire import bind_sockets  # noqa: PLC0415

        self.directory = tempfile.mkdtemp(prefix="expiry-channel-")
        os.chmod(self.directory, mode)
        self._sockets = bind_sockets(self.directory)
        self.socket_path = os.path.join(self.directory, "socket")
        self.waker = self._sockets[1]
        self.queue = SocketRequestQueue(*self._sockets)
        self.errors: list[BaseException] = []

    def connect(self) -> socket.socket:
        """A raw peer on the watchdog's socket, speaking frames by hand."""
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        peer.connect(self.socket_path)
        return peer

    def poll(self, timeout: float = 0.05) -> list[TimerRequest]:
        return self.queue.get(1000, timeout)

    def poll_until(self, wanted: int, seconds: float = 5.0) -> list[TimerRequest]:
        got: list[TimerRequest] = []
        end = time.monotonic() + seconds
        while len(got) < wanted and time.monotonic() < end:
            got += self.poll()
        return got

    def drain(
        self, seconds: float, until: Callable[[list[TimerRequest]], bool] | None = None
    ) -> list[TimerRequest]:
        """Every request the queue yields within ``seconds`` (or until ``until`` is true);
        exceptions out of ``get`` are collected in :attr:`errors`."""
        requests: list[TimerRequest] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until(requests)):
            try:
                requests += self.queue.get(16, 0.05)
            except Exception as error:
                self.errors.append(error)
                time.sleep(0.01)
        return requests

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def leaked(report: Path) -> list[dict[str, Any]]:
    """The ``leaked`` events of a JSON report (``--expiry-report``)."""
    events = json.loads(report.read_text())["events"]
    return [e for e in events if e["event"] == "leaked"]


# one process left by each phase; the module keeps the Popen objects (no ResourceWarning)
PHASED = """
    import subprocess, sys
    import pytest

    STARTED = []

    def sleeper():
        STARTED.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))

    @pytest.fixture
    def started_in_setup():
        sleeper()
        yield

    @pytest.fixture
    def started_in_teardown():
        yield
        sleeper()

    def test_setup(started_in_setup):
        pass

    def test_call():
        sleeper()

    def test_teardown(started_in_teardown):
        pass
"""


def leaked_in_phases(
    pytester: pytest.Pytester, run_pytest: RunPytest, *args: str
) -> dict[str, list[str]]:
    """Run :data:`PHASED` in kill mode: test name -> the phases of the processes it leaked."""
    pytester.makepyfile(PHASED)
    run = run_pytest("--expiry=10", "--expiry-leaks=kill", "--expiry-report=phased.json", *args)
    run.result.assert_outcomes(passed=3)
    records = leaked(pytester.path / "phased.json")
    return {r["nodeid"].split("::")[1]: [p["phase"] for p in r["processes"]] for r in records}
