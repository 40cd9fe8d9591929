"""Test doubles of the timer API, for driving a :class:`TimerServer` loop in-process.

* :class:`FakeRequestQueue` blocks like a real queue (on the real clock) and can be woken;
* :class:`ManualClock` and :class:`AutojumpQueue` run a loop on a clock that moves only when
  the test or the loop's own wait moves it (trio's ``MockClock(autojump_threshold=0)``),
  so a race between a deadline and the loop is set up exactly instead of hoped for;
* :class:`FakeServer` keeps deadlines in a dict and records reaps instead of signalling.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pytest_expiry.timer import RequestQueue, TimerClient, TimerRequest, TimerServer, clock

from .support import WAIT


class ManualClock:
    """A clock that stands still until :meth:`advance` moves it."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "a monotonic clock never goes back"
        self.now += seconds


class AutojumpQueue(RequestQueue):
    """A request queue on a :class:`ManualClock` that never blocks.

    :meth:`deliver` schedules requests to arrive at a clock time. ``get(size, timeout)``
    returns the requests already due; with none, it jumps the clock to the next scheduled
    delivery if that comes within ``timeout`` (and returns it), else by the whole
    ``timeout``: exactly what a real queue does, with the waiting taken out. ``check`` is
    called with each ``timeout`` before the jump (to assert on what the loop decided), and
    every ``timeout`` is recorded in :attr:`timeouts`.
    """

    def __init__(
        self, manual: ManualClock, check: Callable[[float], None] = lambda timeout: None
    ) -> None:
        self._clock = manual
        self._check = check
        self._scheduled: list[tuple[float, TimerRequest]] = []
        self.timeouts: list[float] = []

    def deliver(self, at: float, *requests: TimerRequest) -> None:
        self._scheduled.extend((at, request) for request in requests)
        self._scheduled.sort(key=lambda item: item[0])

    @property
    def pending(self) -> int:
        return len(self._scheduled)

    def size(self) -> int:
        return sum(1 for at, _ in self._scheduled if at <= self._clock())

    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        self.timeouts.append(timeout)
        self._check(timeout)
        if not self.size():
            arrival = self._scheduled[0][0] if self._scheduled else math.inf
            self._clock.advance(min(timeout, arrival - self._clock()))
        batch: list[TimerRequest] = []
        while self._scheduled and self._scheduled[0][0] <= self._clock() and len(batch) < size:
            batch.append(self._scheduled.pop(0)[1])
        return batch


class FakeRequestQueue(RequestQueue):
    """An in-memory request queue with a working :meth:`wake`; records each ``get`` timeout."""

    def __init__(self) -> None:
        self._items: deque[TimerRequest] = deque()
        self._changed = threading.Condition()
        self._woken = False
        self._blocked_for: float | None = None
        self.timeouts: list[float] = []

    def put(self, *requests: TimerRequest) -> None:
        with self._changed:
            self._items.extend(requests)
            self._changed.notify_all()

    def size(self) -> int:
        with self._changed:
            return len(self._items)

    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        with self._changed:
            self.timeouts.append(timeout)
            self._blocked_for = timeout
            self._changed.notify_all()
            self._changed.wait_for(lambda: bool(self._items) or self._woken, timeout)
            self._blocked_for = None
            self._woken = False
            batch: list[TimerRequest] = []
            while self._items and len(batch) < size:
                batch.append(self._items.popleft())
            return batch

    def wake(self) -> None:
        with self._changed:
            self._woken = True
            self._changed.notify_all()

    def wait_until_blocked(self, at_least: float, timeout: float = WAIT) -> bool:
        """Wait until a ``get`` is blocked (nothing to return) for ``at_least`` seconds."""

        def blocked() -> bool:
            return (
                self._blocked_for is not None
                and self._blocked_for >= at_least
                and not self._items
                and not self._woken
            )

        with self._changed:
            return self._changed.wait_for(blocked, timeout)


class SleepyRequestQueue(FakeRequestQueue):
    """A queue that cannot be woken: it keeps :meth:`RequestQueue.wake`'s default."""

    wake = RequestQueue.wake


class FakeServer(TimerServer):
    """Keeps deadlines in a dict and records reaps (worker, clock reading) instead of
    signalling.

    ``reap`` decides each reap's outcome (return a bool or raise). With
    ``knows_next=False`` the server keeps the base class's ``next_expiration`` (None);
    with ``filters=False`` its ``next_expiration`` ignores ``after`` and returns the
    earliest deadline it holds, due or not (a subclass that does not filter).
    """

    def __init__(
        self,
        queue: RequestQueue,
        max_interval: float = 60.0,
        *,
        knows_next: bool = True,
        filters: bool = True,
        reap: Callable[[Any], bool] = lambda worker: True,
        clock: Callable[[], float] = clock,
    ) -> None:
        super().__init__(queue, max_interval, clock=clock)
        self.deadlines: dict[tuple[Any, str], float] = {}
        self.reap_calls: list[tuple[Any, float]] = []
        self._knows_next = knows_next
        self._filters = filters
        self._reap = reap
        self._changed = threading.Condition()

    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        for request in timer_requests:
            key = (request.worker_id, request.scope_id)
            if request.is_release:
                self.deadlines.pop(key, None)
            else:
                self.deadlines[key] = request.expiration_time

    def clear_timers(self, worker_ids: set[Any]) -> None:
        for key in [key for key in self.deadlines if key[0] in worker_ids]:
            del self.deadlines[key]

    def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
        expired: dict[Any, list[TimerRequest]] = {}
        for (worker, scope), expiration in self.deadlines.items():
            if expiration <= deadline:
                expired.setdefault(worker, []).append(TimerRequest(worker, scope, expiration))
        return expired

    def next_expiration(self, after: float) -> float | None:
        if not self._knows_next:
            return super().next_expiration(after)
        floor = after if self._filters else -math.inf
        return min((t for t in self.deadlines.values() if t > floor), default=None)

    def _reap_worker(self, worker_id: Any) -> bool:
        with self._changed:
            self.reap_calls.append((worker_id, self._clock()))
            self._changed.notify_all()
        return self._reap(worker_id)

    def wait_for_reaps(self, count: int, timeout: float = WAIT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.reap_calls) >= count, timeout)

    @property
    def reaped(self) -> list[Any]:
        return [worker for worker, _ in self.reap_calls]


class RecordingClient(TimerClient):
    """Records acquire/release calls and tracks which scopes are armed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []
        self.armed: dict[str, float] = {}

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self.calls.append(("acquire", scope_id, expiration_time))
        self.armed[scope_id] = expiration_time

    def release(self, scope_id: str) -> None:
        self.calls.append(("release", scope_id, None))
        self.armed.pop(scope_id, None)


def tick(server: TimerServer, queue: FakeRequestQueue) -> float:
    """Run one loop iteration without letting it block (a no-op release is waiting) and
    return how long it would have waited."""
    queue.put(release("nobody", "nothing"))
    server._run_watchdog()
    return queue.timeouts[-1]


def arm(worker: Any, scope: str, expiration_time: float) -> TimerRequest:
    return TimerRequest(worker, scope, expiration_time)


def release(worker: Any, scope: str) -> TimerRequest:
    return TimerRequest(worker, scope, -1)
