"""Reliability and security: what the watchdog promises when things go wrong around it.

* **Lifecycle.** A watchdog never outlives its session, however the session dies (SIGKILL of
  pytest or of an xdist worker, Ctrl-C, the watchdog itself frozen or killed); two sessions on
  one host never see each other.
* **Precision.** A test that ends within its deadline is never expired; one that overruns
  always is; many short deadlines under load give no false expiry.
* **PID safety.** Only processes of an expired scope are ever signalled: never a process
  from outside the session (the unit tests are in ``tests/test_pid_safety.py``).
* **Private channel.** The session directory and its sockets belong to the session's user
  (hostile peers of the watchdog's socket: ``tests/test_hostile_peers.py``).
* **Stress.** Hundreds of short deadlines with hangs of every kind mixed in: every hang
  expires exactly once, nothing else does, nothing is left running.
* **Signals.** The tests' own signal handlers keep working; the plugin's signals can be
  moved with ``PYTEST_EXPIRY_SIGNALS``, and bad values are usage errors.

Inner sessions that must be signalled from outside are started by :class:`Session` (in their
own process group, as a terminal starts a foreground job), the others by ``run_pytest``.
Every process they start carries an ``EXPIRY_TEST_TAG``, and each test proves that none is
left at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

try:
    from tests.helpers import TAG, RunPytest, assert_none_left, nobody, tagged_processes
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import (  # type: ignore[no-redef,import-not-found]
        TAG,
        RunPytest,
        assert_none_left,
        nobody,
        tagged_processes,
    )

PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]
WATCHDOG_MODULE = "pytest_expiry.watchdog.main"
_CLEAN_ENV = (
    "PYTEST_EXPIRY",
    "PYTEST_TIMEOUT",
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_AUTO_NUM_WORKERS",
    "PYTEST_EXPIRY_SIGNALS",
    "PYTEST_EXPIRY_STACKS",  # set when this suite itself runs under pytest-expiry
)


# --------------------------------------------------------------------------------------
# helpers


T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, pause: float = 0.01) -> T:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)


def exited(process: psutil.Process) -> bool:
    """True once ``process`` has exited (a zombie waiting for its reaper has exited)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def seconds_until_exited(process: psutil.Process, limit: float) -> float:
    """How long ``process`` took to exit, from now; ``inf`` if it is still alive at ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if exited(process):
            return time.monotonic() - start
        time.sleep(0.005)
    return float("inf")


def kill_tagged(tag: str) -> None:
    """End every process carrying ``tag`` (cleanup of scenarios that leave some on purpose)."""
    for process in tagged_processes(tag):
        with contextlib.suppress(psutil.Error):
            process.kill()


def session_env(tag: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    env[TAG] = tag
    env.update(extra)
    return env


def watchdogs_of(pid: int) -> list[psutil.Process]:
    """The watchdogs launched by session ``pid`` (they are not its children: detached). The
    short-lived shell that launches one carries the same arguments after its own: a
    watchdog is the process that runs the module (``python -m MODULE``)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ValueError):
            command = process.cmdline()
            if command[1:3] == ["-m", WATCHDOG_MODULE]:
                settings = json.loads(command[command.index(WATCHDOG_MODULE) + 1])
                if settings["session_pid"] == pid:
                    found.append(process)
    return found


def watchdog_directory(watchdog: psutil.Process) -> str:
    command = watchdog.cmdline()
    settings: dict[str, Any] = json.loads(command[command.index(WATCHDOG_MODULE) + 1])
    return str(settings["directory"])


def _take_ctrl_c() -> None:
    """In the session's process, before its exec: Ctrl-C (SIGINT) at its default, as in a
    terminal's foreground job, though this pytest runs as a background job of a script
    (which ignores SIGINT, and so would every process it starts)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Session:
    """A pytest run in the background, in its own session and process group, as a terminal
    runs a foreground job; its output goes to a log file."""

    def __init__(self, cwd: Path, args: list[str], tag: str, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.log = cwd / f"session-{uuid.uuid4().hex}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [*PYTEST, *args],
                cwd=cwd,
                env=session_env(tag, **env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_take_ctrl_c,  # noqa: PLW1509 - one sigaction, no lock taken
            )
        self.directories: list[str] = []

    def watchdog(self, timeout: float = 30) -> psutil.Process:
        """The session's watchdog (launched when the first test with a deadline starts)."""
        [found] = wait_for(lambda: watchdogs_of(self.process.pid), timeout, "the watchdog")
        self.directories.append(watchdog_directory(found))
        return found

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class Sessions:
    """Starts :class:`Session` objects with one tag, and cleans up after them."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.tag = uuid.uuid4().hex
        self.started: list[Session] = []

    def start(self, *args: str, **env: str) -> Session:
        session = Session(self.cwd, list(args), self.tag, env)
        self.started.append(session)
        return session

    def close(self) -> None:
        for session in self.started:
            if session.process.poll() is None:
                session.kill()
        try:
            assert_none_left(self.tag)
        finally:
            for session in self.started:
                for directory in session.directories:
                    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sessions(pytester: pytest.Pytester) -> Iterator[Sessions]:
    started = Sessions(pytester.path)
    yield started
    started.close()


def outcome_counts(output: str) -> dict[str, int]:
    """``{"passed": 3, "failed": 1}`` from the last line of a pytest run's output."""
    return pytest.RunResult(0, output.splitlines(), [], 0.0).parseoutcomes()


# --------------------------------------------------------------------------------------
# Lifecycle: pytest SIGKILLed

LONG_TEST = """
    import time

    def test_sleeps_long():
        time.sleep(60)
"""


@dataclass
class KilledSession:
    watchdog_exit: float  # seconds from the SIGKILL of pytest to the watchdog's exit
    directory: str
    directory_left: bool  # still there 2 s after the watchdog exited


@pytest.fixture(scope="module")
def killed_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KilledSession]:
    """pytest SIGKILLed while a test with a deadline runs (so its watchdog is up)."""
    path = tmp_path_factory.mktemp("killed")
    (path / "test_long.py").write_text(textwrap.dedent(LONG_TEST))
    started = Sessions(path)
    try:
        session = started.start("--expiry=60", "test_long.py")
        watchdog = session.watchdog()
        directory = watchdog_directory(watchdog)
        time.sleep(0.2)  # the test is well inside its sleep
        session.process.kill()
        session.process.wait()
        exit_seconds = seconds_until_exited(watchdog, limit=5)
        end = time.monotonic() + 2
        while os.path.exists(directory) and time.monotonic() < end:
            time.sleep(0.01)
        yield KilledSession(exit_seconds, directory, os.path.exists(directory))
    finally:
        started.close()


def test_when_pytest_is_sigkilled_its_watchdog_exits_within_a_second(
    killed_session: KilledSession,
) -> None:
    assert killed_session.watchdog_exit < 1.0, (
        f"the watchdog took {killed_session.watchdog_exit:.2f} s to exit"
    )


def test_when_pytest_is_sigkilled_its_private_directory_does_not_outlive_the_watchdog(
    killed_session: KilledSession,
) -> None:
    """pytest died before its own cleanup: the watchdog is the one left to remove it."""
    assert not killed_session.directory_left, f"{killed_session.directory} is left behind"


FORKS_A_CHILD = """
    import multiprocessing
    import time

    def _sleep():
        time.sleep(30)

    def test_forks_then_sleeps():
        multiprocessing.get_context("fork").Process(target=_sleep).start()
        time.sleep(60)
"""


def test_a_fork_of_a_test_does_not_keep_a_killed_sessions_watchdog_alive(
    pytester: pytest.Pytester, sessions: Sessions
) -> None:
    """The fork inherits the write end of the watchdog's stop pipe, so end-of-file alone
    cannot tell the watchdog that its session died."""
    pytester.makepyfile(FORKS_A_CHILD)
    session = sessions.start("--expiry=60")
    watchdog = session.watchdog()
    wait_for(lambda: len(psutil.Process(session.process.pid).children()) >= 1, 10, "the fork")
    session.process.kill()
    session.process.wait()
    try:
        exit_seconds = seconds_until_exited(watchdog, limit=2)
    finally:
        kill_tagged(sessions.tag)  # the fork itself is orphaned: not the point here
    assert exit_seconds < 1.0, "the watchdog outlived its session"


XDIST_VICTIM = """
    import os
    import time

    def test_victim():
        with open("victim.pid.tmp", "w") as out:
            out.write(str(os.getpid()))
        os.rename("victim.pid.tmp", "victim.pid")
        time.sleep(60)

    def test_after_victim_in_the_same_file():
        pass
"""
XDIST_OTHERS = """
    import os
    import time

    import pytest

    @pytest.fixture
    def victim_killed():
        end = time.monotonic() + 30
        while not os.path.exists("killed"):
            assert time.monotonic() < end, "the victim worker was never killed"
            time.sleep(0.02)

    @pytest.mark.expires(0.5, func_only=True)
    def test_hangs_after_the_kill(victim_killed):
        time.sleep(60)

    def test_passes_after_the_kill(victim_killed):
        pass
"""


def test_when_an_xdist_worker_is_sigkilled_it_is_replaced_and_the_session_ends_clean(
    pytester: pytest.Pytester, sessions: Sessions
) -> None:
    """The watchdog serves the replacement and the other worker as before (a hang after the
    kill still expires); at the end neither the watchdog nor any worker is left."""
    pytester.makepyfile(test_victim=XDIST_VICTIM, test_others=XDIST_OTHERS)
    session = sessions.start("--expiry=30", "-n", "2", "--dist", "load", "--junitxml=junit.xml")
    watchdog = session.watchdog()
    victim_pid_file = pytester.path / "victim.pid"
    wait_for(victim_pid_file.exists, 60, "the victim test to start")
    os.kill(int(victim_pid_file.read_text()), signal.SIGKILL)
    (pytester.path / "killed").touch()
    assert session.wait(60) == pytest.ExitCode.TESTS_FAILED
    output = session.output
    assert "replacing crashed worker" in output
    assert outcome_counts(output) == {"failed": 2, "passed": 2}
    assert "crashed while running 'test_victim.py::test_victim'" in output
    cases = {c.get("name"): c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    hang = cases["test_hangs_after_the_kill"].find("failure")
    assert hang is not None and "Expired: still running" in hang.get("message", "")
    assert "INTERNALERROR" not in output
    assert seconds_until_exited(watchdog, limit=3) < 3


# --------------------------------------------------------------------------------------
# Lifecycle: the watchdog itself frozen or killed

FREEZES_THE_WATCHDOG = """
    import os
    import signal

    import psutil

    def watchdog():
        mine = f'"session_pid": {os.getpid()},'
        [found] = [p for p in psutil.process_iter(["cmdline"])
                   if "pytest_expiry.watchdog.main" in (p.info["cmdline"] or [])
                   and mine in " ".join(p.info["cmdline"])]
        return found

    def test_freezes_the_watchdog():
        os.kill(watchdog().pid, signal.SIGSTOP)

    def test_while_frozen_1():
        pass

    def test_while_frozen_2():
        pass

    def test_kills_the_frozen_watchdog():
        found = watchdog()
        found.kill()
        found.wait()

    def test_after_1():
        pass

    def test_after_2():
        pass
"""


def test_a_watchdog_frozen_then_killed_is_reported_once_and_the_session_carries_on(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(FREEZES_THE_WATCHDOG)
    run = run_pytest("--expiry=5")
    run.result.assert_outcomes(passed=6)
    assert run.output.count("a new watchdog guards the tests from here on") == 1
    assert "INTERNALERROR" not in run.output
    assert run.seconds < 30


OBEYS_SIGTERM_BY_KILLING_THE_WATCHDOG = """
import os, signal, sys, time
watchdog, ready = int(sys.argv[1]), sys.argv[2]
done = []
def on_sigterm(signum, frame):
    if not done:  # once: the watchdog, which sent it, dies in the middle of its ladder
        done.append(signum)
        os.kill(watchdog, signal.SIGKILL)
signal.signal(signal.SIGTERM, on_sigterm)
open(ready, "w").close()
while True:
    time.sleep(0.05)
"""
KILLS_THE_WATCHDOG_MID_ESCALATION = f"""
    import os
    import subprocess
    import sys
    import time

    import psutil

    CHILD = {OBEYS_SIGTERM_BY_KILLING_THE_WATCHDOG!r}

    def test_hangs_while_its_child_kills_the_watchdog(tmp_path):
        mine = f'"session_pid": {{os.getpid()}},'
        [watchdog] = [p for p in psutil.process_iter(["cmdline"])
                      if "pytest_expiry.watchdog.main" in (p.info["cmdline"] or [])
                      and mine in " ".join(p.info["cmdline"])]
        ready = tmp_path / "ready"
        subprocess.Popen([sys.executable, "-c", CHILD, str(watchdog.pid), str(ready)])
        while not ready.exists():
            time.sleep(0.01)
        time.sleep(60)

    def test_after_1():
        pass

    def test_after_2():
        pass
"""


def test_a_watchdog_killed_during_an_escalation_still_fails_the_test_and_leaves_nothing(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The watchdog dies after it interrupted the test, while it waits for the test's child
    to obey SIGTERM: the test still fails as expired, its child is still ended (leak
    detection in kill mode), the dead watchdog is reported once and replaced, and the session
    carries on."""
    pytester.makepyfile(KILLS_THE_WATCHDOG_MID_ESCALATION)
    run = run_pytest("--expiry=2", "--expiry-grace=1", "--expiry-leaks=kill")
    run.result.assert_outcomes(failed=1, passed=2)
    case = run.testcase("test_hangs_while_its_child_kills_the_watchdog")
    failure = case.find("failure")
    assert failure is not None and "Expired: still running" in failure.get("message", "")
    assert "the watchdog's account did not arrive" in (failure.text or "")  # it died mid-way
    assert [p.get("name") for p in case.iter("property")] == ["expiry", "expiry_leaked"]
    assert run.output.count("a new watchdog guards the tests from here on") == 1
    assert "INTERNALERROR" not in run.output


# --------------------------------------------------------------------------------------
# Lifecycle: two sessions, Ctrl-C

SESSION_A = """
    import subprocess
    import time

    def test_a_hangs_with_a_child():
        subprocess.Popen(["sleep", "60"])
        time.sleep(60)
"""
SESSION_B = """
    import os
    import subprocess
    import time

    import pytest

    @pytest.mark.expires(60)
    def test_b_runs_long_with_a_child():
        child = subprocess.Popen(["sleep", "60"])  # dies of any stray signal, even SIGRTMIN+n
        with open("b.ready.tmp", "w") as out:
            out.write(str(child.pid))
        os.rename("b.ready.tmp", "b.ready")
        end = time.monotonic() + 40
        while not os.path.exists("go") and time.monotonic() < end:
            time.sleep(0.02)
        assert child.poll() is None, f"session B's child was ended: {child.returncode}"
        child.terminate()
        child.wait()
"""


def test_two_sessions_have_their_own_watchdogs_and_never_touch_each_others_processes(
    pytester: pytest.Pytester, sessions: Sessions
) -> None:
    pytester.makepyfile(test_session_a=SESSION_A, test_session_b=SESSION_B)
    b = sessions.start("test_session_b.py")
    watchdog_b = b.watchdog()
    wait_for((pytester.path / "b.ready").exists, 30, "session B's test to start its child")
    child_b = psutil.Process(int((pytester.path / "b.ready").read_text()))

    a = sessions.start("test_session_a.py", "--expiry=1", "--expiry-grace=0.5")
    watchdog_a = a.watchdog()
    assert watchdog_a.pid != watchdog_b.pid
    assert watchdog_directory(watchdog_a) != watchdog_directory(watchdog_b)
    assert a.wait(60) == pytest.ExitCode.TESTS_FAILED
    assert "expired" in a.output
    assert outcome_counts(a.output) == {"failed": 1}

    assert not exited(watchdog_b), "session A's end took session B's watchdog with it"
    assert not exited(child_b), "session A's expiry ended session B's child"
    (pytester.path / "go").touch()
    assert b.wait(60) == pytest.ExitCode.OK, b.output
    assert outcome_counts(b.output) == {"passed": 1}


INTERRUPTED = """
    import os
    import subprocess
    import sys
    import time

    def test_is_interrupted():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 start_new_session=os.environ.get("CHILD_OWN_SESSION") == "1")
        with open("ready.tmp", "w") as out:
            out.write(str(child.pid))
        os.rename("ready.tmp", "ready")
        time.sleep(60)
"""


def interrupt_session(
    pytester: pytest.Pytester, sessions: Sessions, **env: str
) -> tuple[Session, psutil.Process, psutil.Process]:
    """Ctrl-C (SIGINT to the foreground process group) in the middle of a test that started
    a child; returns the session, its watchdog and the child."""
    pytester.makepyfile(INTERRUPTED)
    session = sessions.start("--expiry=60", **env)
    watchdog = session.watchdog()
    wait_for((pytester.path / "ready").exists, 30, "the test to start its child")
    child = psutil.Process(int((pytester.path / "ready").read_text()))
    os.killpg(session.process.pid, signal.SIGINT)
    return session, watchdog, child


def test_ctrl_c_stops_the_session_as_pytest_does_and_leaves_nothing_running(
    pytester: pytest.Pytester, sessions: Sessions
) -> None:
    session, watchdog, child = interrupt_session(pytester, sessions)
    assert session.wait(30) == pytest.ExitCode.INTERRUPTED
    assert "KeyboardInterrupt" in session.output
    assert seconds_until_exited(watchdog, limit=3) < 3
    assert seconds_until_exited(child, limit=3) < 3
    assert not os.path.exists(session.directories[0])
    assert_none_left(sessions.tag)


def test_ctrl_c_also_ends_a_child_of_the_test_that_the_interrupt_did_not_reach(
    pytester: pytest.Pytester, sessions: Sessions
) -> None:
    """A child in a session of its own gets no SIGINT from the terminal, and the interrupted
    test never reaches its own leak check."""
    session, _watchdog, child = interrupt_session(pytester, sessions, CHILD_OWN_SESSION="1")
    assert session.wait(30) == pytest.ExitCode.INTERRUPTED
    try:
        gone = seconds_until_exited(child, limit=3)
    finally:
        kill_tagged(sessions.tag)
    assert gone < 3, "the test's child outlived the interrupted session"


# --------------------------------------------------------------------------------------
# Precision


PRECISION_DEADLINE = 1.0
PRECISION_COUNT = 10
PRECISION = f"""
    import time

    import pytest

    @pytest.mark.parametrize("i", range({PRECISION_COUNT}))
    def test_in_time(i):
        time.sleep({0.9 * PRECISION_DEADLINE})

    @pytest.mark.parametrize("i", range({PRECISION_COUNT}))
    def test_overruns(i):
        time.sleep({1.5 * PRECISION_DEADLINE})
"""


@pytest.fixture(scope="module")
def precision_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ET.Element]]:
    """One run, under xdist, of tests that end at 0.9 of their deadline mixed with tests
    that would run for 1.5 times it: the JUnit test cases by name.

    The deadline is 1 s, not less: it covers pytest's own work around the test too
    (reports to the xdist controller, hooks), which on a loaded machine can take tens of
    milliseconds; 0.1 s of margin keeps "never expired" a statement about the plugin."""
    path = tmp_path_factory.mktemp("precision")
    (path / "test_precision.py").write_text(textwrap.dedent(PRECISION))
    started = Sessions(path)
    try:
        session = started.start(f"--expiry={PRECISION_DEADLINE}", "-n", "2", "--junitxml=j.xml")
        assert session.wait(120) == pytest.ExitCode.TESTS_FAILED, session.output
        yield {c.get("name", ""): c for c in ET.parse(path / "j.xml").iter("testcase")}
    finally:
        started.close()


def test_tests_that_end_at_nine_tenths_of_their_deadline_never_expire(
    precision_run: dict[str, ET.Element],
) -> None:
    for i in range(PRECISION_COUNT):
        case = precision_run[f"test_in_time[{i}]"]
        problems = case.findall("failure") + case.findall("error")
        assert problems == [], f"test_in_time[{i}]: {problems[0].get('message')}"


def test_tests_that_overrun_their_deadline_always_expire(
    precision_run: dict[str, ET.Element],
) -> None:
    for i in range(PRECISION_COUNT):
        case = precision_run[f"test_overruns[{i}]"]
        failure = case.find("failure")
        assert failure is not None, f"test_overruns[{i}] ran {case.get('time')} s, not expired"
        assert "Expired: still running" in failure.get("message", "")
        assert float(case.get("time", "nan")) < 1.5 * PRECISION_DEADLINE


OVERRUNS_WHILE_STACKS_ARE_GATHERED = """
    import os
    import signal
    import subprocess
    import sys
    import time

    def test_overruns_by_a_tenth_of_a_second():
        start = time.monotonic()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        stacks = os.environ["PYTEST_EXPIRY_STACKS"].partition(":")[2]
        while not os.path.exists(os.path.join(stacks, str(child.pid))):
            time.sleep(0.01)  # the child can answer the stacks signal...
        os.kill(child.pid, signal.SIGSTOP)  # ...but, stopped, it will not
        time.sleep(start + 2.1 - time.monotonic())
        child.kill()
        child.wait()
"""


def test_a_test_that_ends_after_its_deadline_while_stacks_are_gathered_still_expires(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """Holding the watchdog in its stack gathering with a stopped Python child makes
    deterministic what load does at random: the watchdog reacts late to a deadline."""
    pytester.makepyfile(OVERRUNS_WHILE_STACKS_ARE_GATHERED)
    run = run_pytest("--expiry=2", "--expiry-child-stacks=hook")
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1, "the overrun went unnoticed"
    assert "pytest_expiry.Expired: " in run.output


@pytest.mark.slow
def test_many_short_deadlines_under_xdist_give_no_false_expiry(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("i", range(500))
        def test_trivial(i):
            assert i >= 0
        """
    )
    report = pytester.path / "expiry.json"
    run = run_pytest("--expiry=0.3", "-n", "2", f"--expiry-report={report}")
    run.result.assert_outcomes(passed=500)
    assert json.loads(report.read_text())["expired"] == 0


# --------------------------------------------------------------------------------------
# PID safety

HANGS_WITH_CHILDREN = """
    import subprocess
    import time

    def test_hangs_with_a_child():
        subprocess.Popen(["sleep", "60"])
        time.sleep(60)

    def test_leaks_a_child():
        subprocess.Popen(["sleep", "60"])
"""


def test_an_expiry_never_signals_a_process_from_outside_the_session(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """A ``sleep`` of the same user, started before the session (it would die of SIGTERM,
    SIGKILL, or either of the plugin's real-time signals), survives a session in which the
    watchdog ended a hung test's tree and leak detection ended a leaked child."""
    bystander = subprocess.Popen(["sleep", "60"])  # tagged: run_pytest set the tag already
    try:
        pytester.makepyfile(HANGS_WITH_CHILDREN)
        run = run_pytest("--expiry=0.5", "--expiry-grace=0.3", "--expiry-leaks=kill")
        run.result.assert_outcomes(failed=1, passed=1)
        assert "LEAKED" in run.output
        assert bystander.poll() is None, f"the bystander died: {bystander.returncode}"
    finally:
        bystander.kill()
        bystander.wait()


# --------------------------------------------------------------------------------------
# Private channel


@pytest.fixture(scope="module")
def running_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The private directory of a live session (its test sleeps under a deadline)."""
    path = tmp_path_factory.mktemp("running")
    (path / "test_long.py").write_text(textwrap.dedent(LONG_TEST))
    started = Sessions(path)
    try:
        session = started.start("--expiry=120", "test_long.py")
        yield watchdog_directory(session.watchdog())
    finally:
        started.close()


def test_the_session_directory_is_private_to_the_sessions_user(running_session: str) -> None:
    info = os.stat(running_session)
    assert os.path.basename(running_session).startswith("pytest-expiry-")
    assert info.st_uid == os.getuid()
    assert info.st_mode & 0o777 == 0o700
    assert {"socket", "wake", "stacks"} <= set(os.listdir(running_session))


AS_NOBODY = """
import errno, os, socket, sys
directory, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as error:
        return errno.errorcode.get(error.errno, str(error.errno))
stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
wake = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
print(attempt(lambda: stream.connect(os.path.join(directory, "socket"))),
      attempt(lambda: wake.sendto(b"!", os.path.join(directory, "wake"))),
      attempt(lambda: os.listdir(os.path.join(directory, "stacks"))))
"""


def test_another_user_cannot_reach_the_watchdogs_sockets(running_session: str) -> None:
    user = nobody()
    result = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, running_session, str(user.pw_uid), str(user.pw_gid)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    connect, wake, stacks = result.stdout.split()
    assert (connect, wake, stacks) == ("EACCES", "EACCES", "EACCES")


# --------------------------------------------------------------------------------------
# Stress

STRESS_COUNT = 2000
_SPREAD = (0, 2)  # each index below, times 5, plus each of these: two hangs per slot
HANG_KINDS = {
    "sleep": [5 * i + d for i in (13, 71, 137, 199, 263, 331) for d in _SPREAD],
    "busy": [5 * i + d for i in (29, 89, 151, 211, 281, 347) for d in _SPREAD],
    "child": [5 * i + d for i in (43, 107, 173, 239, 307) for d in _SPREAD],
    "gil": [5 * i for i in (61, 227, 379)],  # hard-killed: each costs grace + a worker restart
}
STRESS = f"""
    import subprocess
    import sys
    import time

    import pytest

    KIND = {{i: kind for kind, indices in {HANG_KINDS!r}.items() for i in indices}}

    @pytest.mark.parametrize("i", range({STRESS_COUNT}))
    def test_many(i):
        kind = KIND.get(i)
        if kind == "sleep":
            time.sleep(3600)
        elif kind == "busy":
            while True:
                pass
        elif kind == "child":
            subprocess.run([sys.executable, "-c", "import time; time.sleep(3600)"])
        elif kind == "gil":
            sum(range(10**15))
"""


@dataclass
class StressRun:
    output: str
    cases: dict[str, ET.Element]  # JUnit test cases by name
    report: dict[str, Any]  # the JSON report
    hangs: set[str]


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StressRun]:
    """2000 tests with a 0.3 s deadline under two xdist workers; 37 of them hang (sleep,
    busy loop, hung child process, C loop holding the GIL)."""
    path = tmp_path_factory.mktemp("stress")
    (path / "test_stress.py").write_text(textwrap.dedent(STRESS))
    started = Sessions(path)
    try:
        session = started.start(
            "--expiry=0.3", "--expiry-grace=0.5", "-n", "2", "--max-worker-restart=10",
            "--junitxml=j.xml", "--expiry-report=expiry.json",
        )  # fmt: skip
        assert session.wait(300) == pytest.ExitCode.TESTS_FAILED, session.output
        yield StressRun(
            session.output,
            {c.get("name", ""): c for c in ET.parse(path / "j.xml").iter("testcase")},
            json.loads((path / "expiry.json").read_text()),
            {f"test_many[{i}]" for indices in HANG_KINDS.values() for i in indices},
        )
    finally:
        started.close()  # and nothing is left running


@pytest.mark.slow
def test_stress_every_hang_fails_as_expired_and_every_other_test_passes(
    stress_run: StressRun,
) -> None:
    hangs = stress_run.hangs
    assert outcome_counts(stress_run.output) == {
        "failed": len(hangs), "passed": STRESS_COUNT - len(hangs)
    }  # fmt: skip
    assert len(stress_run.cases) == STRESS_COUNT
    for name, case in stress_run.cases.items():
        problems = case.findall("failure") + case.findall("error")
        if name in hangs:
            assert len(problems) == 1 and problems[0].tag == "failure", name
            assert "Expired: still running" in problems[0].get("message", ""), name
        else:
            assert problems == [], f"{name} did not hang but: {problems[0].get('message')}"
    assert "maximum crashed workers" not in stress_run.output


@pytest.mark.slow
def test_stress_the_json_report_has_one_expiry_record_per_hang(stress_run: StressRun) -> None:
    records = [e for e in stress_run.report["events"] if e["event"] in ("expired", "hard_killed")]
    assert sorted(e["nodeid"].split("::")[-1] for e in records) == sorted(stress_run.hangs)
    assert stress_run.report["expired"] == len(stress_run.hangs)
    hard = {e["nodeid"].split("::")[-1] for e in records if e["event"] == "hard_killed"}
    assert hard == {f"test_many[{i}]" for i in HANG_KINDS["gil"]}


@pytest.mark.slow
def test_stress_no_expiry_ever_signals_the_xdist_controller(stress_run: StressRun) -> None:
    """Every process an expiry signalled is the test process or one of its descendants;
    the controller (the test process's parent) never is, not even for a hard kill."""
    for record in stress_run.report["events"]:
        if record["event"] not in ("expired", "hard_killed"):
            continue
        [worker] = [p for p in record["processes"] if p["role"] == "test process"]
        listed = {str(p["pid"]) for p in record["processes"]}
        assert set(record["signals"]) <= listed, record["nodeid"]
        assert str(worker["ppid"]) not in record["signals"], record["nodeid"]
        assert worker["ppid"] not in {p["pid"] for p in record["processes"]}, record["nodeid"]


# --------------------------------------------------------------------------------------
# Signals the tests use

USES_SIGALRM = """
    import signal
    import time

    import pytest

    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()

    def test_uses_sigalrm_to_bound_a_sleep():
        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(Alarm):
                time.sleep(10)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    @pytest.mark.expires(0.5)
    def test_hangs_afterwards():
        time.sleep(60)
"""
USES_SIGUSR1 = """
    import os
    import signal
    import time

    import pytest

    def test_handles_its_own_sigusr1():
        received = []
        previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            end = time.monotonic() + 2
            while not received and time.monotonic() < end:
                time.sleep(0.01)
            assert received == [signal.SIGUSR1]
        finally:
            signal.signal(signal.SIGUSR1, previous)

    @pytest.mark.expires(0.5)
    def test_hangs_afterwards():
        time.sleep(60)
"""


@pytest.mark.parametrize("source", [USES_SIGALRM, USES_SIGUSR1], ids=["SIGALRM", "SIGUSR1"])
def test_a_tests_own_signal_handler_works_and_expiry_still_works_after_it(
    pytester: pytest.Pytester, run_pytest: RunPytest, source: str
) -> None:
    pytester.makepyfile(source)
    run = run_pytest("--expiry=5")
    run.result.assert_outcomes(passed=1, failed=1)
    failure = run.testcase("test_hangs_afterwards").find("failure")
    assert failure is not None and "Expired: still running" in failure.get("message", "")


CUSTOM_SIGNALS = """
    import signal
    import subprocess
    import sys
    import time

    def test_the_plugin_handles_the_chosen_interrupt_signal():
        handler = signal.getsignal(signal.SIGUSR1)
        assert getattr(handler, "__name__", None) == "_on_interrupt"

    def test_hangs_with_a_python_child():
        subprocess.run([sys.executable, "-c", "import time; time.sleep(3600)"])

    def test_after():
        pass
"""


@pytest.mark.parametrize(
    "value",
    ["SIGUSR2,SIGUSR1", f"{int(signal.SIGUSR2)},{int(signal.SIGUSR1)}"],
    ids=["names", "numbers"],
)
def test_pytest_expiry_signals_moves_the_plugins_signals_and_expiry_still_works(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """Stacks on SIGUSR2 (of the test process and, through the start-up hook, of its Python
    child), the interrupt on SIGUSR1."""
    monkeypatch.setenv("PYTEST_EXPIRY_SIGNALS", value)
    pytester.makepyfile(CUSTOM_SIGNALS)
    run = run_pytest("--expiry=1", "--expiry-grace=0.5", "--expiry-child-stacks=hook")
    run.result.assert_outcomes(passed=2, failed=1)
    failure = run.testcase("test_hangs_with_a_python_child").find("failure")
    assert failure is not None and "Expired: still running" in failure.get("message", "")
    assert "(no Python stack" not in (failure.text or "")
    assert 'File "<string>", line 1' in (failure.text or ""), "no stack of the Python child"


@pytest.mark.parametrize("value", ["SIGKILL,SIGUSR1", "nonsense", "SIGUSR1,SIGUSR1", "SIGUSR1"])
def test_a_bad_pytest_expiry_signals_is_a_usage_error_naming_the_variable(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PYTEST_EXPIRY_SIGNALS", value)
    pytester.makepyfile("def test_ok(): pass")
    run = run_pytest("--expiry=1", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "PYTEST_EXPIRY_SIGNALS" in run.output
