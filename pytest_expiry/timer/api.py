"""The seed API: timer requests, clients, request queues, servers and ``expires``.

The shape follows ``torch.distributed.elastic.timer`` so that code written for it reads the
same here. The differences are deliberate fixes:

* every ``expires`` call gets its own scope, so nested unnamed scopes never share a key;
* deadlines are read on :func:`clock` (``time.monotonic``), which every process on a host
  shares and which does not jump with the wall clock;
* a server wakes at the earliest deadline it holds instead of sleeping ``max_interval``; one
  that passed while it was busy is acted on at once, a failed reap retried soon;
* the clock a server reads is injectable, so its loop can be tested on a manual clock;
* ``stop()`` wakes the server at once when its queue supports :meth:`RequestQueue.wake`.
"""

from __future__ import annotations

import abc
import itertools
import math
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_expiry.clock import clock

if TYPE_CHECKING:
    import logging

__all__ = [
    "RequestQueue",
    "TimerClient",
    "TimerRequest",
    "TimerServer",
    "clock",
    "configure",
    "expires",
]


@dataclass(frozen=True)
class TimerRequest:
    """Arms (``expiration_time >= 0``) or releases (negative) the timer ``scope_id`` of a worker.

    ``worker_started`` is the worker process's start time (:func:`pytest_expiry.procs.start_time`)
    when the client knows it; a server uses it to never signal a process that merely
    inherited a dead worker's pid.
    """

    worker_id: Any
    scope_id: str
    expiration_time: float
    worker_started: float | None = None

    @property
    def is_release(self) -> bool:
        return self.expiration_time < 0


def _log() -> logging.Logger:
    """This module's logger, for errors only: importing logging costs a fresh process 5 ms."""
    import logging  # noqa: PLC0415

    return logging.getLogger(__name__)


class TimerClient(abc.ABC):
    """Arms and releases timers on behalf of the calling worker."""

    @abc.abstractmethod
    def acquire(self, scope_id: str, expiration_time: float) -> None:
        """Arm ``scope_id`` to expire at ``expiration_time`` (on :func:`clock`), replacing any
        earlier deadline of the same scope."""

    @abc.abstractmethod
    def release(self, scope_id: str) -> None:
        """Disarm ``scope_id``; releasing a scope that is not armed does nothing."""


class RequestQueue(abc.ABC):
    """Carries :class:`TimerRequest` objects from clients to one server."""

    @abc.abstractmethod
    def size(self) -> int:
        """A hint of how many requests are waiting (may be approximate, never raises)."""

    @abc.abstractmethod
    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        """Return up to ``size`` requests, waiting at most ``timeout`` seconds for the first."""

    def wake(self) -> None:  # noqa: B027 - optional for subclasses
        """Make a ``get`` blocked in another thread return early.

        The default does nothing: a server on such a queue notices ``stop()`` only once its
        current wait (at most ``max_interval``) has ended.
        """


class TimerServer(abc.ABC):
    """Watches the deadlines its queue delivers and reaps the workers that overrun them.

    Subclasses store timers (:meth:`register_timers`, :meth:`clear_timers`,
    :meth:`get_expired_timers`, :meth:`next_expiration`) and decide what reaping means
    (:meth:`_reap_worker`). The loop runs in a thread between :meth:`start` and :meth:`stop`.

    Each pass of the loop waits for requests, registers them, reads the clock (``now``) and
    offers every worker with a timer due at ``now`` to :meth:`_reap_worker`. The wait before
    the next pass ends at the earliest of: ``max_interval``; the earliest expiration later
    than the last pass's ``now`` (so a deadline that passed during that pass, or since,
    ends the wait at once); and, after a failed reap, :attr:`reap_retry` seconds.

    ``clock`` is what the server reads the time from; deadlines must be on the same clock.
    """

    reap_retry: float = 0.1
    """Seconds between attempts at reaping a worker whose reap failed (capped at
    ``max_interval``): soon enough to keep the latency of a reap, slow enough not to spin."""

    def __init__(
        self,
        request_queue: RequestQueue,
        max_interval: float = 60.0,
        daemon: bool = True,
        *,
        clock: Callable[[], float] = clock,
    ) -> None:
        if not max_interval > 0:
            raise ValueError(
                f"max_interval must be a positive number of seconds, not {max_interval!r}"
            )
        self._request_queue = request_queue
        self._max_interval = max_interval
        self._daemon = daemon
        self._clock = clock
        self._handled_until = -math.inf
        self._retry_at: float | None = None
        self._stop_signaled = False
        self._stopping = threading.Event()
        self._watchdog_thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    @abc.abstractmethod
    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        """Apply arm and release requests, in order."""

    @abc.abstractmethod
    def clear_timers(self, worker_ids: set[Any]) -> None:
        """Forget every timer of these workers."""

    @abc.abstractmethod
    def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
        """The timers whose expiration time is at or before ``deadline``, by worker."""

    @abc.abstractmethod
    def _reap_worker(self, worker_id: Any) -> bool:
        """End an overrunning worker; True when it is gone (or was already), so its timers
        can be cleared."""

    def next_expiration(self, after: float) -> float | None:
        """The earliest expiration time later than ``after``, or None if there is none or
        it is unknown (the base class: the loop then polls every ``max_interval``).

        ``after`` is the ``now`` of the loop's last pass, which offered every timer due by
        then to :meth:`_reap_worker` (a failed one is retried on :attr:`reap_retry`). The
        result may be at or before the current time: the next pass then starts at once."""
        return None

    def _reap_worker_no_throw(self, worker_id: Any) -> bool:
        try:
            return self._reap_worker(worker_id)
        except Exception:
            _log().exception("error reaping worker %s; its timers stay armed", worker_id)
            return False

    def _wait_before_next_pass(self) -> float:
        """Seconds until the loop must act: 0 when a timer is already due."""
        handled = self._handled_until
        wake_at = self.next_expiration(handled)
        if wake_at is not None and wake_at <= handled:
            wake_at = None  # only a failed reap is that old: retried on reap_retry
        if self._retry_at is not None:
            wake_at = self._retry_at if wake_at is None else min(wake_at, self._retry_at)
        if wake_at is None:
            return self._max_interval
        return max(0.0, min(self._max_interval, wake_at - self._clock()))

    def _run_watchdog(self) -> None:
        """One pass: wait for requests (see the class), register them, reap what is due."""
        timeout = self._wait_before_next_pass()
        requests = self._request_queue.get(max(1, self._request_queue.size()), timeout)
        self._handled_until = -math.inf  # a new timer may be overdue already; and if this
        self.register_timers(requests)  # pass fails, the next must look at every timer
        now = self._clock()
        reaped: set[Any] = set()
        failed = False
        for worker_id in self.get_expired_timers(now):
            if self._reap_worker_no_throw(worker_id):
                reaped.add(worker_id)
            else:
                failed = True
        self.clear_timers(reaped)
        self._handled_until = now
        self._retry_at = now + min(self.reap_retry, self._max_interval) if failed else None

    def _watchdog_loop(self) -> None:
        while not self._stop_signaled:
            try:
                self._run_watchdog()
            except Exception:
                _log().exception("timer server loop error; retrying")
                self._stopping.wait(min(self._max_interval, 0.1))  # a broken queue must not spin

    def start(self) -> None:
        """Start the loop in a thread; a server that is already running is left as it is."""
        with self._lifecycle:
            if self._watchdog_thread is not None and self._watchdog_thread.is_alive():
                return
            self._stop_signaled = False
            self._stopping.clear()
            self._watchdog_thread = threading.Thread(
                target=self._watchdog_loop, name="expiry-timer-server", daemon=self._daemon
            )
            self._watchdog_thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for its thread (at most ``max_interval``)."""
        with self._lifecycle:
            self._stop_signaled = True
            self._stopping.set()
            self._request_queue.wake()
            if self._watchdog_thread is not None:
                self._watchdog_thread.join(self._max_interval)
                self._watchdog_thread = None


def expired_by_worker(
    timers: Iterable[TimerRequest], deadline: float
) -> dict[Any, list[TimerRequest]]:
    """The timers that expire at or before ``deadline``, grouped by worker (a helper for
    :meth:`TimerServer.get_expired_timers`)."""
    expired: dict[Any, list[TimerRequest]] = {}
    for request in timers:
        if request.expiration_time <= deadline:
            expired.setdefault(request.worker_id, []).append(request)
    return expired


_timer_client: TimerClient | None = None
_scope_numbers = itertools.count()


def configure(timer_client: TimerClient) -> None:
    """Make ``timer_client`` the default client of :func:`expires` in this process."""
    global _timer_client
    _timer_client = timer_client


class _ExpiryScope:
    def __init__(self, client: TimerClient, scope_id: str, after: float) -> None:
        self._client = client
        self._scope_id = scope_id
        self._after = after

    def __enter__(self) -> None:
        self._client.acquire(self._scope_id, clock() + self._after)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.release(self._scope_id)


def expires(
    after: float, scope: str | None = None, client: TimerClient | None = None
) -> _ExpiryScope:
    """A context manager: the calling worker must leave the block within ``after`` seconds.

    Without ``scope`` the block gets a scope of its own, named after the calling line plus a
    number unique in this process, so nested and repeated blocks never disarm each other.
    Exceptions raised inside propagate unchanged. Raises RuntimeError when no client is given
    and none was set with :func:`configure`.
    """
    chosen = client if client is not None else _timer_client
    if chosen is None:
        raise RuntimeError(
            "expires() has no timer client: call pytest_expiry.timer.configure(client) "
            "in this process first, or pass client=..."
        )
    if scope is None:
        caller = sys._getframe(1)
        scope = f"{caller.f_code.co_filename}:{caller.f_lineno}#{next(_scope_numbers)}"
    return _ExpiryScope(chosen, scope, after)
