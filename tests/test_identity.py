"""A process's identity (pid and start time) does not move when the system clock does.

psutil's ``create_time()`` is the start since boot plus the boot time, and Linux derives the
boot time from the wall clock: an NTP step, or a slew across a second, changes it while a
session runs. An identity built on it took a live session for a dead one (its watchdog then
ended every process the session had started) and a hung test process for a stranger."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil
import pytest

from pytest_expiry import procs
from pytest_expiry.watchdog.main import _Session

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")


@pytest.fixture
def clock_is_set_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on psutil sees a boot time one second later, as after an NTP step."""
    from psutil import _pslinux  # noqa: PLC0415 - the module exists on Linux only

    created = psutil.Process().create_time()
    boot_time = _pslinux.boot_time()
    monkeypatch.setattr(_pslinux, "boot_time", lambda: boot_time + 1.0)
    assert psutil.Process().create_time() == pytest.approx(created + 1.0)


@linux_only
def test_the_start_time_is_unchanged_when_the_clock_is_set(
    request: pytest.FixtureRequest,
) -> None:
    before = procs.start_time(os.getpid())
    request.getfixturevalue("clock_is_set_forward")
    assert before is not None
    assert procs.start_time(os.getpid()) == before


@linux_only
def test_a_process_is_still_itself_after_the_clock_is_set(request: pytest.FixtureRequest) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = procs.start_time(child.pid)
        request.getfixturevalue("clock_is_set_forward")
        found = procs.identify(child.pid, started)
        assert found is not None and found.pid == child.pid
    finally:
        child.kill()
        child.wait()


def test_a_process_with_another_start_time_is_a_stranger() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = procs.start_time(child.pid)
        assert started is not None
        assert procs.identify(child.pid, started) is not None
        assert procs.identify(child.pid, started - 1.0) is None
    finally:
        child.kill()
        child.wait()
    assert procs.identify(child.pid, started) is None, "a reaped process is no one"
    assert procs.start_time(child.pid) is None


@linux_only
def test_the_watchdog_keeps_its_session_alive_when_the_clock_is_set(
    request: pytest.FixtureRequest,
) -> None:
    """Before the fix, the watchdog's next check after a clock step said the session had
    died, and the watchdog ended every process the session's tests had started."""
    read_end, write_end = os.pipe()
    try:
        session = _Session(os.getpid(), read_end)
        assert session.alive()
        request.getfixturevalue("clock_is_set_forward")
        assert session.alive()
    finally:
        os.close(write_end)
        os.close(read_end)


@linux_only
def test_the_watchdog_takes_a_session_that_died_unreaped_for_gone() -> None:
    """A killed session (a hard kill without xdist, SIGKILL from CI) is a zombie until its
    parent reaps it. A parent that reads the session's output to its end first
    (``subprocess.run(capture_output=True)``, ``$(pytest ...)``) waits for the watchdog,
    which holds that output open. Before the fix the watchdog took the zombie for alive
    (its start time is unchanged) and, its pidfd readable, spun on ``select`` until the
    zombie was reaped: never, for such a parent."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    read_end, write_end = os.pipe()
    try:
        session = _Session(child.pid, read_end)
        child.kill()
        end = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < end, "the child did not die"
            time.sleep(0.01)
        outcome: list[bool] = []
        waiting = threading.Thread(target=lambda: outcome.append(session.wait()), daemon=True)
        waiting.start()
        waiting.join(3.0)
        assert outcome == [False], "the watchdog still waits for a session that died"
    finally:
        child.kill()
        child.wait()  # reaped: a wait() that was still spinning ends too
        os.close(write_end)
        os.close(read_end)
