"""The timer table every server of ours keeps (no multiprocessing: the watchdog imports it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_expiry.timer.api import (
    RequestQueue,
    TimerRequest,
    TimerServer,
    clock,
    expired_by_worker,
)

__all__ = ["TimerTable"]


class TimerTable(TimerServer):
    """A :class:`TimerServer` that keeps its timers in a table by ``(worker_id, scope_id)``:
    the bookkeeping every server shares; a subclass says how to reap a worker."""

    def __init__(
        self,
        request_queue: RequestQueue,
        max_interval: float = 60.0,
        daemon: bool = True,
        *,
        clock: Callable[[], float] = clock,
    ) -> None:
        super().__init__(request_queue, max_interval, daemon, clock=clock)
        self._timers: dict[tuple[Any, str], TimerRequest] = {}

    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        for request in timer_requests:
            key = (request.worker_id, request.scope_id)
            if request.is_release:
                self._timers.pop(key, None)
            else:
                self._timers[key] = request

    def clear_timers(self, worker_ids: set[Any]) -> None:
        for key in [key for key in self._timers if key[0] in worker_ids]:
            del self._timers[key]

    def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
        return expired_by_worker(self._timers.values(), deadline)

    def next_expiration(self, after: float) -> float | None:
        """The earliest deadline strictly after ``after`` (see :class:`TimerServer`)."""
        upcoming = [r.expiration_time for r in self._timers.values() if r.expiration_time > after]
        return min(upcoming, default=None)
