"""Threads a test leaves running after its teardown (part of ``--expiry-leaks``).

The rule: a thread is LEAKED by a test when, after the test's teardown, it is alive, is not a
daemon (so the interpreter's exit waits for it), appeared during the test, and is busy: an
idle ``concurrent.futures`` worker waiting for its next job is not a leak (its executor joins
it at exit), one still running a job is. Threads that appeared while a fixture of wider scope
than ``function`` was set up belong to that fixture. A worker of an older pool that was idle
when the test began and runs a job after its teardown runs a job the test left: it is
reported too.

A thread cannot be ended from outside, so every mode reports it (``fail`` also errors the
test, as it does for processes). The test that left each thread is remembered, so that an
exit the thread then blocks can name it (:func:`left_by`).
"""

from __future__ import annotations

import sys
import threading
import traceback
import weakref
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from pytest_expiry import _compat, lineage

if TYPE_CHECKING:
    from pytest_expiry.record import Record

__all__ = ["ThreadWatch", "exit_blockers", "left_by"]

_NONE: frozenset[threading.Thread] = frozenset()
_LEFT_BY: weakref.WeakKeyDictionary[threading.Thread, str] = weakref.WeakKeyDictionary()


def left_by(thread: threading.Thread) -> str | None:
    """The node id of the test that left ``thread`` running, if one did."""
    return _LEFT_BY.get(thread)


class ThreadWatch:
    """Per test: :meth:`begin`, then :meth:`check` after the teardown.

    A thread's id (``native_id``) is a pid like any other, handed out in the same order, so
    the threads that appeared during a test are those whose ids the test's window of
    allocated pids holds (:mod:`pytest_expiry.lineage`): a test that allocated none started
    none, and only a pool's idle workers need a look at its start."""

    def __init__(self) -> None:
        self._idle: AbstractSet[threading.Thread] = _NONE
        self._owned: weakref.WeakSet[threading.Thread] = weakref.WeakSet()

    def begin(self) -> None:
        self._idle = _idle_workers() if _compat.pool_workers_may_run() else _NONE

    @property
    def watching(self) -> bool:
        """Whether pool workers were idle at the test's start: a test that allocated no pid
        started no thread, but may have given one of them a job."""
        return bool(self._idle)

    def snapshot(self) -> set[threading.Thread]:
        return set(threading.enumerate())

    def owned_by_fixture(self, before: set[threading.Thread]) -> None:
        """Threads that appeared since ``before`` (a :meth:`snapshot` taken when a wider-scoped
        fixture began its setup) belong to that fixture."""
        self._owned.update(t for t in threading.enumerate() if t not in before)

    def check(self, nodeid: str, action: str, window: tuple[int, int] | None) -> Record | None:
        """The record of the threads ``nodeid`` left busy, if any. ``window``: the marks of
        the first and last pid allocated during the test (None if it allocated none)."""
        if window is None and not self._idle:
            return None  # no thread appeared, no worker was idle
        candidates = [
            thread
            for thread in threading.enumerate()
            if (thread in self._idle or _appeared_in(thread, window))
            and thread not in self._owned
            and not thread.daemon
        ]
        if not candidates:
            return None
        frames = sys._current_frames()
        leaked = [
            thread
            for thread in candidates
            if thread.is_alive() and not _compat.is_idle_pool_worker(frames.get(thread.ident or 0))
        ]
        if not leaked:
            return None
        for thread in leaked:
            _LEFT_BY[thread] = nodeid
        from pytest_expiry import record  # noqa: PLC0415 - rare path

        threads = [_describe(thread, frames.get(thread.ident or 0)) for thread in leaked]
        return record.leaked_threads(nodeid, action, threads)


def _appeared_in(thread: threading.Thread, window: tuple[int, int] | None) -> bool:
    """Whether ``thread``'s id was allocated in ``window`` (one not running yet has none:
    it was just started)."""
    if window is None:
        return False
    start, end = window
    native = thread.native_id
    return native is None or 0 < lineage.position(native, start) <= lineage.position(end, start)


def exit_blockers() -> list[dict[str, Any]]:
    """The threads tests left that are still busy at the end of the session: the
    interpreter's exit waits for each. Each is ``{"name", "ident", "stack", "test"}``."""
    frames = sys._current_frames()
    blockers = []
    for thread in threading.enumerate():
        test = left_by(thread)
        frame = frames.get(thread.ident or 0)
        if test and thread.is_alive() and not _compat.is_idle_pool_worker(frame):
            blockers.append({**_describe(thread, frame), "test": test})
    return blockers


def _idle_workers() -> set[threading.Thread]:
    """The ``concurrent.futures`` pool workers that wait for a job. Their frames are read
    only when there are pool workers (an xdist worker always has another thread:
    execnet's)."""
    workers = [thread for thread in threading.enumerate() if _compat.runs_pool_worker(thread)]
    if not workers:
        return set()
    frames = sys._current_frames()
    return {t for t in workers if _compat.is_idle_pool_worker(frames.get(t.ident or 0))}


def _describe(thread: threading.Thread, frame: Any) -> dict[str, Any]:
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    return {"name": thread.name, "ident": thread.ident, "stack": stack}
