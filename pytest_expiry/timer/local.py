"""Timers over a ``multiprocessing`` queue: the server is a thread in the parent process."""

from __future__ import annotations

import hashlib
import os
import pickle
import queue
import select
import stat
import struct
from collections.abc import Callable
from multiprocessing import connection
from typing import Any

from pytest_expiry import procs
from pytest_expiry.timer.api import (
    RequestQueue,
    TimerClient,
    TimerRequest,
    clock,
)
from pytest_expiry.timer.table import TimerTable

__all__ = ["LocalTimerClient", "LocalTimerServer", "MultiprocessingRequestQueue"]


class _Identity:
    """This process's pid and create time, recomputed after a fork."""

    def __init__(self) -> None:
        self._pid = -1
        self._created: float | None = None

    def current(self) -> tuple[int, float | None]:
        pid = os.getpid()
        if pid != self._pid:
            self._created = procs.start_time(pid)
            self._pid = pid
        return pid, self._created


_FRAME_HEADER = struct.Struct("!i")
"""The length prefix of a ``multiprocessing.connection.Connection`` message."""

_SCOPE_KEPT = 512
"""How many trailing characters of an over-long scope id survive its shortening."""


def _shortened(scope_id: str) -> str:
    """A stable stand-in for a scope id too long for one atomic pipe write: its digest (so
    distinct scopes stay distinct) and its tail (so it still reads as the scope)."""
    digest = hashlib.sha256(scope_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}:...{scope_id[-_SCOPE_KEPT:]}"


def _frame(request: TimerRequest) -> bytes:
    """``request`` as one pipe message (length prefix and pickle) of at most ``PIPE_BUF``
    bytes, its scope id shortened (see :func:`_shortened`) if that is what it takes."""
    payload = pickle.dumps(request, pickle.HIGHEST_PROTOCOL)
    if _FRAME_HEADER.size + len(payload) > select.PIPE_BUF:
        shorter = TimerRequest(
            request.worker_id,
            _shortened(request.scope_id),
            request.expiration_time,
            request.worker_started,
        )
        payload = pickle.dumps(shorter, pickle.HIGHEST_PROTOCOL)
        if _FRAME_HEADER.size + len(payload) > select.PIPE_BUF:
            raise ValueError(f"a timer request of worker {request.worker_id!r} is too large")
    return _FRAME_HEADER.pack(len(payload)) + payload


class LocalTimerClient(TimerClient):
    """Sends this process's requests to a :class:`LocalTimerServer` through ``mp_queue``.

    The worker id is the pid; the request also carries the process's create time so that the
    server can tell the worker from a later process that reuses its pid.

    On a ``multiprocessing`` ``Queue`` or ``SimpleQueue`` each request is written to the
    queue's pipe by the calling thread in a single ``os.write`` of at most ``PIPE_BUF``
    bytes, which POSIX makes atomic: no write lock is shared with the other workers, so a
    worker killed at any moment never cuts them off, and no feeder thread is left for
    the worker's exit to join. The message is the one ``put()`` would send, so the server
    reads it with ``get()``, and a ``Queue``'s item count stays right. A scope id too long
    for that is replaced by a stable digest of it (:func:`_shortened`). ``acquire`` and
    ``release`` block only while the pipe is full (the server has stopped reading), and
    raise ``OSError`` if no process can read it any more. Other queues get ``put()``.
    """

    def __init__(self, mp_queue: Any) -> None:
        self._mp_queue = mp_queue
        self._identity = _Identity()

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        pid, created = self._identity.current()
        self._send(TimerRequest(pid, scope_id, expiration_time, created))

    def release(self, scope_id: str) -> None:
        pid, created = self._identity.current()
        self._send(TimerRequest(pid, scope_id, -1, created))

    def _send(self, request: TimerRequest) -> None:
        pipe = self._pipe()
        if pipe is None:
            self._mp_queue.put(request)
            return
        frame = _frame(request)
        items = getattr(self._mp_queue, "_sem", None)  # a Queue counts its items, as put()
        if items is not None:
            items.acquire()
        written = os.write(pipe, frame)
        if written != len(frame):  # cannot happen on a pipe: such a write is all or nothing
            raise OSError(f"short write of a timer request: {written} of {len(frame)} bytes")

    def _pipe(self) -> int | None:
        """The write end of the queue's pipe, or None if the queue has none (a thread
        queue, a manager's proxy): then ``put()`` is all there is."""
        writer = getattr(self._mp_queue, "_writer", None)
        if not isinstance(writer, connection.Connection):
            return None
        if getattr(self._mp_queue, "_closed", False):
            raise ValueError(f"queue {self._mp_queue!r} is closed")
        fd = writer.fileno()
        return fd if stat.S_ISFIFO(os.fstat(fd).st_mode) else None


class MultiprocessingRequestQueue(RequestQueue):
    """A :class:`RequestQueue` over a ``multiprocessing`` queue (or any queue with get/put).

    ``size()`` works where ``qsize()`` is not implemented (macOS). With a
    ``multiprocessing.Queue`` or ``SimpleQueue``, :meth:`wake` interrupts a blocked ``get``;
    other queues are waited on with their own timeout.
    """

    def __init__(self, mp_queue: Any) -> None:
        self._mp_queue = mp_queue
        self._reader: Any = getattr(mp_queue, "_reader", None)
        self._wake_reader, self._wake_writer = connection.Pipe(duplex=False)

    def size(self) -> int:
        qsize = getattr(self._mp_queue, "qsize", None)  # SimpleQueue has none
        if qsize is not None:
            try:
                return int(qsize())
            except NotImplementedError:  # macOS
                pass
        return 0 if self._mp_queue.empty() else 1

    def wake(self) -> None:
        self._wake_writer.send_bytes(b"")

    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        first = self._first(timeout)
        if first is None:
            return []
        requests = [first]
        while len(requests) < size and (request := self._next_waiting()) is not None:
            requests.append(request)
        return requests

    def _next_waiting(self) -> TimerRequest | None:
        if self._reader is not None:
            return self._mp_queue.get() if self._reader.poll() else None
        try:
            return self._mp_queue.get(block=False)  # type: ignore[no-any-return]
        except queue.Empty:
            return None

    def _first(self, timeout: float) -> TimerRequest | None:
        if self._reader is None:
            try:
                return self._mp_queue.get(block=True, timeout=timeout)  # type: ignore[no-any-return]
            except queue.Empty:
                return None
        ready = connection.wait([self._reader, self._wake_reader], timeout)
        if self._wake_reader in ready:
            while self._wake_reader.poll():
                self._wake_reader.recv_bytes()
        if self._reader not in ready:
            return None
        return self._mp_queue.get()  # type: ignore[no-any-return]


class LocalTimerServer(TimerTable):
    """Keeps timers by ``(pid, scope_id)`` and SIGKILLs a worker whose timer expires.

    A worker is signalled only while its pid still names the process that armed the timer;
    one that is already gone just has its timers dropped. ``clock`` is as for
    :class:`TimerServer`.
    """

    def __init__(
        self,
        mp_queue: Any,
        max_interval: float = 60.0,
        daemon: bool = True,
        *,
        clock: Callable[[], float] = clock,
    ) -> None:
        super().__init__(MultiprocessingRequestQueue(mp_queue), max_interval, daemon, clock=clock)

    def _reap_worker(self, worker_id: Any) -> bool:
        """Kill each process that armed an expired timer under ``worker_id``, if it is still
        the same process; drop its timers. A process that has since taken the pid keeps its
        own timers (then False: not every timer of the pid is gone)."""
        now = self._clock()
        expired = {
            r.worker_started
            for (w, _), r in self._timers.items()
            if w == worker_id and r.expiration_time <= now
        }
        for started in expired:
            worker = procs.identify(int(worker_id), started)
            if worker is not None:
                procs.end_processes([worker], grace=0)
        for key in [k for k, r in self._timers.items() if k[0] == worker_id]:
            if self._timers[key].worker_started in expired:
                del self._timers[key]
        return not any(key[0] == worker_id for key in self._timers)
