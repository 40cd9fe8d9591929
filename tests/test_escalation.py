"""The escalation ladder on a process that cannot be interrupted (it catches none of our
signals: a test that reset them, an exec, or a session that already put its old handlers
back): it is hard-killed with what it started, unless its scope ends before anything is
ended. Real processes, real signals; each test ends what it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_expiry import procs
from pytest_expiry.signals import default_signals
from pytest_expiry.timer.api import TimerRequest, clock
from pytest_expiry.watchdog.escalation import Escalation, LadderSettings


class Ladder:
    """An escalation for ``worker``'s scope, expired a moment ago; what it delivered and
    whom it was about to hard-kill are recorded."""

    def __init__(self, worker: psutil.Process, directory: Path) -> None:
        request = TimerRequest(worker.pid, "t.py::t", clock() - 0.001, procs.start_time(worker.pid))
        settings = LadderSettings(1.0, default_signals(), str(directory))
        self.delivered: list[dict[str, Any]] = []
        self.killing: list[int] = []
        self.escalation = Escalation(request, settings, self._deliver, self._before_hard_kill)

    def _deliver(self, pid: int, event: dict[str, Any]) -> bool:
        self.delivered.append(event)
        return True

    def _before_hard_kill(self, pid: int, event: dict[str, Any]) -> None:
        self.killing.append(pid)


@pytest.fixture
def worker() -> Iterator[psutil.Process]:
    """A shell with a child, neither catching our signals, in a process group of its own."""
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    process = psutil.Process(shell.pid)
    try:
        assert _wait_for_child(process), "the shell never started its child"
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        assert _group_ends(shell.pid, within=5.0), "left over"


def _wait_for_child(process: psutil.Process) -> bool:
    for _ in range(200):
        if process.children():
            return True
        threading.Event().wait(0.01)
    return False


def _group_ends(group: int, within: float) -> bool:
    """Whether every live member of ``group`` is gone within ``within`` seconds (a SIGKILL
    is delivered when its target next runs, not when it is sent)."""
    for _ in range(int(within / 0.01)):
        if not [p for p in psutil.process_iter() if _in_group(p, group)]:
            return True
        threading.Event().wait(0.01)
    return False


def _in_group(process: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(process.pid) == group and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def test_a_scope_released_as_the_stacks_are_gathered_ends_nothing(
    worker: psutil.Process, tmp_path: Path
) -> None:
    """Its release reaches the watchdog a moment after the escalation began (the watchdog's
    timer thread reads it): the process and its child live on, and no expiry is told."""
    child = worker.children()[0]
    ladder = Ladder(worker, tmp_path)
    release = threading.Timer(0.05, ladder.escalation.answered)
    release.start()
    ladder.escalation.run()
    release.cancel()
    release.join()
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    assert ladder.killing == [] and ladder.delivered == []


def test_a_scope_never_released_is_hard_killed_with_what_it_started(
    worker: psutil.Process, tmp_path: Path
) -> None:
    child = worker.children()[0]
    ladder = Ladder(worker, tmp_path)
    ladder.escalation.run()
    assert ladder.killing == [worker.pid]
    [event] = ladder.delivered
    assert event["hard_killed"] and not event["interruptible"]
    _gone, alive = psutil.wait_procs([worker, child], timeout=5)
    assert alive == [], "they outlived the hard kill"
