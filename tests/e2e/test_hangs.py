"""Every kind of hang the plugin promises to beat, end to end.

One inner test module (``INNER``) hangs in every way we know of, each hang followed by a
test that passes. It runs once per mode (plain pytest, and pytest-xdist with two workers), and
each promise below reads that cached run:

* the hung test fails with ``Expired`` (a ``<failure>`` in JUnit for a hang in the call, an
  ``<error>`` for a hang in fixture setup or teardown) whose message says "expired";
* the frame where it hangs is in the report, and so are the stacks of its hung Python
  descendants (fork and spawn children, subprocesses, a grandchild);
* its time in JUnit stays within its deadline + 1 s (+ the grace where SIGTERM is ignored);
* a descendant that ignores SIGTERM gets SIGKILL;
* every test after a hang runs and passes, and nothing is left running.
"""

from __future__ import annotations

import os
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from tests.helpers import Run, RunPytest

DEADLINE = 0.5
GRACE = 0.5
SPAWN_DEADLINE = 1.0  # a spawned child imports this module (and pytest) before it hangs

INNER = r"""
import asyncio
import multiprocessing
import socket
import subprocess
import sys
import threading
import time

import pytest

FOREVER = 3600


def test_sleep():
    time.sleep(FOREVER)


def test_after_sleep():
    pass


def test_busy_loop():
    while True:
        pass


def test_after_busy_loop():
    pass


def test_lock_deadlock():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


def test_after_lock_deadlock():
    pass


def test_socket_recv():
    left, right = socket.socketpair()
    with left, right:
        left.recv(1)


def test_after_socket_recv():
    pass


def hung_thread_body():
    threading.Event().wait()


def test_join_hung_thread():
    thread = threading.Thread(target=hung_thread_body, daemon=True)
    thread.start()
    thread.join()


def test_after_join_hung_thread():
    pass


def hung_in_fork_child(ready):
    ready.set()
    time.sleep(FOREVER)


def hung_in_spawn_child(ready):
    ready.set()
    time.sleep(FOREVER)


def join_hung_child(method, target):
    context = multiprocessing.get_context(method)
    ready = context.Event()
    child = context.Process(target=target, args=(ready,))
    child.start()
    ready.wait()
    child.join()


def test_fork_child():
    join_hung_child("fork", hung_in_fork_child)


def test_after_fork_child():
    pass


@pytest.mark.expires(SPAWN_DEADLINE)
def test_spawn_child():
    join_hung_child("spawn", hung_in_spawn_child)


def test_after_spawn_child():
    pass


def sleepy_pool_task(number):
    time.sleep(FOREVER)


def test_pool_map():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(sleepy_pool_task, range(2))


def test_after_pool_map():
    pass


HUNG_SUBPROCESS = (
    "import time\n"
    "def hung_in_subprocess():\n"
    "    time.sleep(3600)\n"
    "hung_in_subprocess()\n"
)


def test_subprocess_wait():
    subprocess.run([sys.executable, "-c", HUNG_SUBPROCESS], check=True)


def test_after_subprocess_wait():
    pass


IGNORES_SIGTERM = (
    "import signal, time\n"
    "def ignores_sigterm():\n"
    "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "    print('ready', flush=True)\n"
    "    time.sleep(3600)\n"
    "ignores_sigterm()\n"
)


def test_child_ignores_sigterm():
    child = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True
    )
    child.stdout.readline()  # SIGTERM is ignored from now on
    child.wait()


def test_after_child_ignores_sigterm():
    pass


def hung_in_grandchild(ready):
    ready.set()
    time.sleep(FOREVER)


def waits_on_its_child(ready):
    context = multiprocessing.get_context("spawn")
    grandchild = context.Process(target=hung_in_grandchild, args=(ready,))
    grandchild.start()
    grandchild.join()


@pytest.mark.expires(SPAWN_DEADLINE)
def test_grandchild():
    join_hung_child("spawn", waits_on_its_child)


def test_after_grandchild():
    pass


@pytest.fixture
def hangs_in_setup():
    time.sleep(FOREVER)
    yield


def test_fixture_setup(hangs_in_setup):
    pass


def test_after_fixture_setup():
    pass


@pytest.fixture
def hangs_in_teardown():
    yield
    time.sleep(FOREVER)


def test_fixture_teardown(hangs_in_teardown):
    pass


def test_after_fixture_teardown():
    pass


async def never_finishes():
    await asyncio.Event().wait()


def test_asyncio_never_finishes():
    asyncio.run(never_finishes())


def test_after_asyncio_never_finishes():
    pass
""".replace("SPAWN_DEADLINE", repr(SPAWN_DEADLINE))


@dataclass(frozen=True)
class Hang:
    """One hung test of ``INNER``: where it hangs and how long it may take."""

    test: str
    frame: str  # a function whose frame must be in the report
    phase: str = "call"
    deadline: float = DEADLINE
    grace: float = 0.0  # added to the time bound where SIGTERM is ignored

    @property
    def junit_tag(self) -> str:
        return "failure" if self.phase == "call" else "error"


HANGS = [
    Hang("test_sleep", "test_sleep"),
    Hang("test_busy_loop", "test_busy_loop"),
    Hang("test_lock_deadlock", "test_lock_deadlock"),
    Hang("test_socket_recv", "test_socket_recv"),
    Hang("test_join_hung_thread", "test_join_hung_thread"),
    Hang("test_fork_child", "test_fork_child"),
    Hang("test_spawn_child", "test_spawn_child", deadline=SPAWN_DEADLINE),
    Hang("test_pool_map", "test_pool_map"),
    Hang("test_subprocess_wait", "test_subprocess_wait"),
    Hang("test_child_ignores_sigterm", "test_child_ignores_sigterm", grace=GRACE),
    Hang("test_grandchild", "test_grandchild", deadline=SPAWN_DEADLINE),
    Hang("test_fixture_setup", "hangs_in_setup", phase="setup"),
    Hang("test_fixture_teardown", "hangs_in_teardown", phase="teardown"),
    Hang("test_asyncio_never_finishes", "test_asyncio_never_finishes"),
]
HANG_IDS = [hang.test for hang in HANGS]
HANG_BY_NAME = {hang.test: hang for hang in HANGS}

MODES = {"plain": (), "xdist": ("-n", "2")}
QUIET = ("-p", "no:hypothesispytest")  # it imports hypothesis at the summary: 1.5 s per process


@dataclass
class Session:
    """One inner run of ``INNER`` and the processes still alive after it."""

    run: Run
    left_running: list[str]

    def case(self, test: str) -> ET.Element:
        case: ET.Element = self.run.testcase(test)
        return case

    def outcome(self, hang: Hang) -> ET.Element:
        """The ``<failure>`` or ``<error>`` element of a hung test."""
        case = self.case(hang.test)
        element = case.find(hang.junit_tag)
        assert element is not None, ET.tostring(case, encoding="unicode")
        return element

    def report(self, hang: Hang) -> str:
        """The full text of a hung test's failure: traceback, then the expiry section."""
        return self.outcome(hang).text or ""


_SESSIONS: dict[str, Session] = {}


def _left_running(within: float = 3.0) -> list[str]:
    """Processes of the inner run (tagged by ``run_pytest``) still alive ``within`` seconds
    after it ended."""
    tag = os.environ["EXPIRY_TEST_TAG"]
    end = time.monotonic() + within
    while True:
        left = []
        for process in psutil.process_iter():
            try:
                if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if process.environ().get("EXPIRY_TEST_TAG") == tag:
                    left.append(f"{process.pid}: {' '.join(process.cmdline())}")
            except psutil.Error:
                continue
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.05)


@pytest.fixture(params=list(MODES))
def session(
    request: pytest.FixtureRequest, pytester: pytest.Pytester, run_pytest: RunPytest
) -> Session:
    """The inner run for this mode, run once and shared by every test of this module."""
    mode = request.param
    if mode not in _SESSIONS:
        pytester.makepyfile(test_inner=INNER)
        run = run_pytest(f"--expiry={DEADLINE}", f"--expiry-grace={GRACE}", *QUIET, *MODES[mode])
        _SESSIONS[mode] = Session(run, _left_running())
    return _SESSIONS[mode]


_STACKS = re.compile(
    r"^--- stacks of pid (\d+) \((.+?)\), most recent call first ---\n(.*?)(?=^--- stacks of|\Z)",
    re.M | re.S,
)
_PROCESS = re.compile(r"^  pid +(\d+) +(.+?) +signals: (.*?)  ", re.M)


def role_of(label: str) -> str:
    """A process's role from its label: the test process (plain, or an xdist worker), or one
    of its descendants (``multiprocessing child (fork)``, ``subprocess``, ...)."""
    return (
        "test process"
        if label == "test process" or label.startswith("xdist worker")
        else ("descendant")
    )


def stacks_of(report: str) -> dict[int, tuple[str, str]]:
    """``pid -> (role, stacks)`` from an expiry section."""
    return {int(pid): (role_of(label), text) for pid, label, text in _STACKS.findall(report)}


def signals_of(report: str) -> dict[int, str]:
    """``pid -> "SIGTERM, SIGKILL"`` (or "-") from an expiry section's process list."""
    return {int(pid): sent.strip() for pid, _role, sent in _PROCESS.findall(report)}


def descendant_with_frame(report: str, frame: str) -> int:
    """The pid of the descendant whose stacks show ``frame``."""
    for pid, (role, text) in stacks_of(report).items():
        if role == "descendant" and f" in {frame}\n" in text + "\n":
            return pid
    raise AssertionError(f"no descendant's stacks show {frame!r}:\n{report}")


# --- the promises ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HANG_IDS)
def test_a_hung_test_fails_with_expired(session: Session, name: str) -> None:
    """A hang in the call is a JUnit <failure>, one in setup/teardown an <error>; either way
    its message says the test expired."""
    hang = HANG_BY_NAME[name]
    outcome = session.outcome(hang)
    assert "Expired: still running" in outcome.get("message", ""), outcome.get("message")
    assert "pytest_expiry.Expired" in session.report(hang)


@pytest.mark.parametrize("name", HANG_IDS)
def test_the_hung_frame_is_in_the_report(session: Session, name: str) -> None:
    """The test process's stacks, in the failure's expiry section, show where it hangs."""
    hang = HANG_BY_NAME[name]
    report = session.report(hang)
    assert f"expired in {hang.phase} after" in report
    own = [text for role, text in stacks_of(report).values() if role == "test process"]
    assert own, f"no stacks of the test process:\n{report}"
    assert f" in {hang.frame}\n" in own[0] + "\n", report


@pytest.mark.parametrize("name", HANG_IDS)
def test_a_hung_test_ends_within_its_deadline(session: Session, name: str) -> None:
    """JUnit's time of a hung test is within its deadline + 1 s (+ the grace when a
    descendant ignores SIGTERM)."""
    hang = HANG_BY_NAME[name]
    seconds = float(session.case(hang.test).get("time", "nan"))
    assert seconds < hang.deadline + 1.0 + hang.grace


@pytest.mark.parametrize("name", HANG_IDS)
def test_the_test_after_a_hang_passes(session: Session, name: str) -> None:
    """The session goes on: the test that follows each hang runs and passes."""
    after = session.case(name.replace("test_", "test_after_", 1))
    problems = [after.find(tag) for tag in ("failure", "error", "skipped")]
    assert problems == [None, None, None], ET.tostring(after, encoding="unicode")


def test_the_session_counts_every_hang(session: Session) -> None:
    """Every hang fails or errors, every other test passes; JUnit was written for all."""
    call_hangs = sum(hang.phase == "call" for hang in HANGS)
    passed = len(HANGS) + 1  # each test_after_*, and the call of test_fixture_teardown
    session.run.result.assert_outcomes(
        failed=call_hangs, errors=len(HANGS) - call_hangs, passed=passed
    )
    assert session.run.junit is not None
    assert len(list(session.run.junit.iter("testcase"))) == 2 * len(HANGS)


def test_nothing_is_left_running(session: Session) -> None:
    """No process the inner session started (children, grandchildren, the watchdog, xdist's
    workers) outlives it."""
    assert session.left_running == []


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("test_fork_child", "hung_in_fork_child"),
        ("test_spawn_child", "hung_in_spawn_child"),
        ("test_subprocess_wait", "hung_in_subprocess"),
        ("test_pool_map", "sleepy_pool_task"),
    ],
)
def test_the_stacks_of_hung_descendants_are_in_the_report(
    session: Session, name: str, frame: str
) -> None:
    """Fork and spawn children, pool workers and subprocesses answer for their stacks."""
    report = session.report(HANG_BY_NAME[name])
    descendant_with_frame(report, frame)


@pytest.mark.parametrize(
    ("name", "frame"),
    [("test_fork_child", "hung_in_fork_child"), ("test_spawn_child", "hung_in_spawn_child")],
)
def test_a_hung_child_gets_sigterm(session: Session, name: str, frame: str) -> None:
    """A child that the test only joins is ended by the watchdog, with SIGTERM first.
    (subprocess.run and Pool's exit kill their own children once Expired reaches them.)"""
    report = session.report(HANG_BY_NAME[name])
    assert signals_of(report)[descendant_with_frame(report, frame)] == "SIGTERM", report


def test_every_thread_of_the_test_process_is_in_the_report(session: Session) -> None:
    """The main thread joins a hung thread: the hung thread's frames are there too."""
    report = session.report(HANG_BY_NAME["test_join_hung_thread"])
    own = [text for role, text in stacks_of(report).values() if role == "test process"]
    assert own and " in hung_thread_body\n" in own[0], report


def test_the_stack_of_a_hung_grandchild_is_in_the_report(session: Session) -> None:
    """A child waiting on its own hung child: both are listed with their stacks."""
    report = session.report(HANG_BY_NAME["test_grandchild"])
    child = descendant_with_frame(report, "waits_on_its_child")
    grandchild = descendant_with_frame(report, "hung_in_grandchild")
    assert child != grandchild
    signals = signals_of(report)
    assert "SIGTERM" in signals[child] and "SIGTERM" in signals[grandchild], report


def test_a_child_that_ignores_sigterm_gets_sigkill(session: Session) -> None:
    """SIGTERM, the grace period, then SIGKILL: the expiry section says both were sent."""
    report = session.report(HANG_BY_NAME["test_child_ignores_sigterm"])
    pid = descendant_with_frame(report, "ignores_sigterm")
    assert signals_of(report)[pid] == "SIGTERM, SIGKILL", report
