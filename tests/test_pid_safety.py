"""PID safety: the watchdog signals only processes of an expired scope, never pid 1, itself,
a recycled pid, or a process that exited. Every signal the code under test would send is
recorded instead (``sent_signals``), so a regression fails the test rather than killing
pid 1 or pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil
import pytest

from pytest_expiry import procs
from pytest_expiry.signals import default_signals
from pytest_expiry.timer.api import TimerRequest, clock
from pytest_expiry.watchdog.escalation import Escalation, LadderSettings


def test_pid_1_and_the_watchdogs_own_pid_are_protected() -> None:
    assert procs.is_protected(0)
    assert procs.is_protected(1)
    assert procs.is_protected(os.getpid())
    assert not procs.is_protected(os.getppid())


def test_identify_never_returns_a_protected_process() -> None:
    assert procs.identify(1) is None
    assert procs.identify(os.getpid()) is None
    assert procs.identify(os.getpid(), procs.start_time(os.getpid())) is None


@pytest.fixture
def sent_signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record, instead of sending, every signal the code under test sends: a regression
    here must fail the test, not SIGKILL pid 1 or pytest."""
    sent: list[tuple[int, int]] = []

    def record_send(process: psutil.Process, sig: int) -> None:
        sent.append((process.pid, int(sig)))

    def record_main_thread(pid: int, signum: int) -> None:
        sent.append((pid, int(signum)))

    monkeypatch.setattr(psutil.Process, "send_signal", record_send)
    monkeypatch.setattr(psutil.Process, "kill", lambda p: record_send(p, signal.SIGKILL))
    monkeypatch.setattr(psutil.Process, "terminate", lambda p: record_send(p, signal.SIGTERM))
    monkeypatch.setattr("pytest_expiry.watchdog.escalation.signal_main_thread", record_main_thread)
    monkeypatch.setattr("pytest_expiry.stacks.collect.signal_main_thread", record_main_thread)
    monkeypatch.setattr(os, "kill", record_main_thread)
    return sent


def test_end_processes_never_signals_pid_1_or_the_watchdog_itself(
    sent_signals: list[tuple[int, int]],
) -> None:
    ending = procs.end_processes([psutil.Process(1), psutil.Process()], grace=0)
    assert sent_signals == []
    assert ending.signals == {}


@pytest.mark.parametrize("who", ["pid 1", "the watchdog itself"])
def test_an_expired_scope_claimed_by_a_protected_pid_escalates_to_nothing(
    sent_signals: list[tuple[int, int]], who: str
) -> None:
    pid = 1 if who == "pid 1" else os.getpid()
    request = TimerRequest(pid, "test_x.py::test_x", clock() - 1, procs.start_time(pid))
    delivered: list[Any] = []
    settings = LadderSettings(0.1, default_signals(), tempfile.gettempdir())

    def deliver(pid: int, event: dict[str, Any]) -> bool:
        delivered.append(event)
        return True

    def before_hard_kill(pid: int, event: dict[str, Any]) -> None:
        delivered.append(event)

    Escalation(request, settings, deliver, before_hard_kill).run()
    assert sent_signals == []
    assert delivered == []


def _take_pid(pid: int, attempts: int = 50) -> subprocess.Popen[bytes] | None:
    """Start a ``sleep`` that gets exactly ``pid`` (through ns_last_pid), or None."""
    for _ in range(attempts):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as last:
                last.write(str(pid - 1))
        except OSError:
            return None
        candidate = subprocess.Popen(["sleep", "60"])
        if candidate.pid == pid:
            return candidate
        candidate.kill()
        candidate.wait()
    return None


def test_a_recycled_pid_is_never_signalled() -> None:
    """A process object of a test's child that exited, whose pid now names a stranger:
    ``identify`` refuses it and ``end_processes`` neither raises nor signals the stranger."""
    original = subprocess.Popen(["sleep", "60"])
    remembered = psutil.Process(original.pid)
    started = procs.start_time(original.pid)
    original.kill()
    original.wait()
    time.sleep(0.05)  # a start time differs from the old one by at least a clock tick
    stranger = _take_pid(original.pid)
    if stranger is None:
        pytest.skip("cannot recycle a pid here (ns_last_pid not writable, or too busy)")
    try:
        assert procs.identify(remembered.pid, started) is None
        assert procs.gone(remembered)
        ending = procs.end_processes([remembered], grace=0.1)
        assert ending.signals == {}
        time.sleep(0.1)
        assert stranger.poll() is None, "the stranger that got the recycled pid was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_process_that_exited_is_never_signalled_and_never_an_error() -> None:
    child = subprocess.Popen(["sleep", "60"])
    remembered = psutil.Process(child.pid)
    child.kill()
    child.wait()
    ending = procs.end_processes([remembered], grace=0.1)
    assert ending.signals == {}
    assert ending.survivors == []


def test_processes_are_identified_after_an_in_process_run_dropped_psutil_from_sys_modules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pytester's in-process run restores ``sys.modules``; psutil then looks itself up in
    vain (a KeyError from inside ``psutil.Process``, seen as an INTERNALERROR of the leak
    check after such a run)."""
    monkeypatch.delitem(sys.modules, "psutil")
    child = subprocess.Popen(["sleep", "60"])
    try:
        procs.keep_importable()
        assert procs.identify(child.pid) is not None
    finally:
        child.kill()
        child.wait()


def test_a_process_is_started_before_a_moment_only_surely_so() -> None:
    """``procs.started_before``, on the clock of deadlines: the kernel knows a start to its
    clock tick, so only a moment a tick or more later is surely after it."""
    before = clock()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=-1)
    try:
        assert not procs.started_before(child.pid, before - 0.001)
        assert procs.started_before(child.pid, clock() + 0.05)
        assert procs.started_before(os.getpid(), before)  # pytest started long before
    finally:
        child.communicate()
    assert not procs.started_before(child.pid, clock() + 0.05), "gone: not before anything"
