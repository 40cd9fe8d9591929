"""Fixtures shared by the timer tests, and the leak guards every one of them runs under.

Two autouse guards make each test prove it cleaned up after itself:

* ``no_leaked_processes``: every process the test started (directly or not) must be gone
  at the end, after a grace of a few seconds for processes that are already dying.
* ``no_leaked_threads``: every thread the test started (a server's watchdog, a queue's
  feeder thread) must have ended.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from pytest_expiry import procs
from pytest_expiry.timer import api

GRACE = 3.0
"""Seconds a leftover process or thread gets to finish on its own before it is a leak."""

_MULTIPROCESSING_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _is_multiprocessing_helper(process: psutil.Process) -> bool:
    """The forkserver and the resource tracker are started by ``multiprocessing`` on first
    use and deliberately live until the interpreter exits; they are shared by every later
    test, so they are not a test's leak. Each is a direct child of this process running
    ``python -c "from multiprocessing.<helper> import main; ..."``. Workers forked by the
    forkserver share its command line but are its children, so they are still counted."""
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(marker in command for marker in _MULTIPROCESSING_HELPERS)


def _descendants() -> dict[tuple[int, float | None], psutil.Process]:
    """Every live descendant of this process except the multiprocessing helpers, keyed by
    (pid, create time) so that a recycled pid is not mistaken for a process seen before."""
    me = psutil.Process()
    helpers = {p.pid for p in me.children() if _is_multiprocessing_helper(p)}
    found: dict[tuple[int, float | None], psutil.Process] = {}
    for process in me.children(recursive=True):
        if process.pid in helpers:
            continue
        try:
            found[(process.pid, procs.start_time(process.pid))] = process
        except psutil.Error:
            continue
    return found


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail the test if a process it started is still running after it (and reap it)."""
    before = set(_descendants())
    yield
    new = [p for key, p in _descendants().items() if key not in before]
    _, alive = psutil.wait_procs(new, timeout=GRACE)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=GRACE)
    described = []
    for process in alive:
        try:
            described.append(f"{process.pid}: {' '.join(process.cmdline())}")
        except psutil.Error:
            described.append(str(process.pid))
    assert not alive, f"the test left processes running: {described}"


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail the test if a thread it started is still running after it."""
    before = set(threading.enumerate())
    yield
    new = [t for t in threading.enumerate() if t not in before]
    for thread in new:
        thread.join(GRACE)
    alive = [t.name for t in new if t.is_alive()]
    assert not alive, f"the test left threads running: {alive}"


@pytest.fixture
def no_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timer client is configured in this process for the duration of the test."""
    monkeypatch.setattr(api, "_timer_client", None)


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every signal sent from this process with ``os.kill`` (psutil and multiprocessing
    both send through it), as (pid, signal). Probes with signal 0 are not recorded. A
    signal aimed at this very process is recorded but not delivered, so a bug that makes
    the server signal the test process fails the test instead of killing the run."""
    sent: list[tuple[int, int]] = []
    real_kill = os.kill

    def spy(pid: int, sig: int) -> None:
        if sig == 0:
            real_kill(pid, sig)
            return
        sent.append((pid, sig))
        if pid in (os.getpid(), 0, -1):
            return
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", spy)
    return sent


@pytest.fixture
def new_queue() -> Iterator[Callable[..., Any]]:
    """Make ``multiprocessing`` queues (``new_queue(method, kind="Queue")``, kind being
    ``Queue`` or ``SimpleQueue``) that are closed, and whose feeder thread is joined, when
    the test ends."""
    made: list[Any] = []

    def new(method: str = "fork", kind: str = "Queue") -> Any:
        queue = getattr(multiprocessing.get_context(method), kind)()
        made.append(queue)
        return queue

    yield new
    for queue in made:
        queue.close()
        if hasattr(queue, "join_thread"):
            queue.join_thread()


@pytest.fixture
def serve() -> Iterator[Callable[[api.TimerServer], Any]]:
    """Start a server (``serve(server)``) that is stopped when the test ends."""
    started: list[api.TimerServer] = []

    def start(server: api.TimerServer) -> Any:
        started.append(server)
        server.start()
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A live process (``sleep 30``) that never armed a timer."""
    process = subprocess.Popen(["sleep", "30"])
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(GRACE)
