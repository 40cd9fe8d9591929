"""Helpers for the pytest process: process lifecycles and a server that reports what it did."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing import connection
from multiprocessing.process import BaseProcess
from typing import Any

from pytest_expiry.timer import TimerRequest, clock
from pytest_expiry.timer.local import LocalTimerServer

START_METHODS = ("spawn", "fork", "forkserver")

WAIT = 10.0
"""How long a test waits for something that should take well under a second."""


@contextmanager
def running(*processes: BaseProcess) -> Iterator[None]:
    """Start ``processes``; on the way out, kill those still running and join them all."""
    try:
        for process in processes:
            process.start()
        yield
    finally:
        for process in processes:
            if process.pid is not None and process.exitcode is None:
                process.kill()
        for process in processes:
            if process.pid is not None:
                process.join(WAIT)


def seen_dead_at(process: BaseProcess, timeout: float) -> float | None:
    """The :func:`clock` reading right after ``process`` is seen to exit, or None if it
    is still running after ``timeout`` seconds. Waits on the process's sentinel, so the
    reading is at most a scheduling delay after the real exit."""
    if not connection.wait([process.sentinel], timeout):
        return None
    seen = clock()
    process.join()
    return seen


class RecordingServer(LocalTimerServer):
    """A real :class:`LocalTimerServer` that also records, for the test thread to wait on,
    every request it registers and every reap it performs (worker id, result, clock)."""

    def __init__(self, mp_queue: Any, max_interval: float = 60.0) -> None:
        super().__init__(mp_queue, max_interval)
        self.registered: list[TimerRequest] = []
        self.reaps: list[tuple[Any, bool, float]] = []
        self._changed = threading.Condition()

    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        super().register_timers(timer_requests)
        with self._changed:
            self.registered.extend(timer_requests)
            self._changed.notify_all()

    def _reap_worker(self, worker_id: Any) -> bool:
        result = super()._reap_worker(worker_id)
        with self._changed:
            self.reaps.append((worker_id, result, clock()))
            self._changed.notify_all()
        return result

    def wait_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        """Wait until ``predicate()`` (evaluated under the recording lock) holds."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)
