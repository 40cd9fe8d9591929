"""Processes a test leaves running after its teardown (``--expiry-leaks``).

The rule: a process is LEAKED by a test when it is alive after the test's teardown, was
created during the test (between its start and the end of its teardown), and is either a
child of the test process or an escapee that carries the session's tag
(:mod:`pytest_expiry.lineage`) and whose parent does not: a daemon reparented to init, say.
Everything below it that the test created goes with it. Never a test's: what was created
outside any test (at import, during collection, before the first test or between tests),
while a fixture of wider scope than ``function`` was set up (it belongs to that fixture),
by a process the test did not create (a cached pool, a server's worker: they belong to
it), and multiprocessing's helpers, our watchdog and execnet gateways (xdist workers).

Nothing is adopted (no child subreaper) and nothing is reaped (no ``waitpid``: a process's
owner must see its real exit status). ``warn`` only reports; ``kill`` and ``fail`` end what
leaked (SIGTERM, grace, SIGKILL), and at the end of the session whatever the session started
that still runs.

Finding them is cheap because pids are handed out in order: the last pid allocated is read at
the test's start and at the end of each phase, and only pids allocated in between are looked
at (one ``/proc/<pid>/status`` each, and the environment of those that may have escaped; on
a wrap-around or a huge range, ``/proc`` is listed once). A test that starts no process or
thread (and runs while nothing else on the host starts any) pays one ``pread`` and one
``fcntl`` per phase and one at its start. Linux only; elsewhere leak detection is off.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pytest_expiry import lastpid, lineage

if TYPE_CHECKING:  # psutil is imported when a test leaves a process, not before
    import psutil

    from pytest_expiry.record import Record

__all__ = ["LEAK_MODES", "LeakWatch", "supported"]

LEAK_MODES = ("kill", "warn", "fail", "off")
PHASES = ("setup", "call", "teardown")


def supported() -> bool:
    return sys.platform.startswith("linux") and lastpid.pid_source() is not None


class LeakWatch:
    """Finds, reports and (in ``kill`` and ``fail`` modes) ends what each test leaves.

    Per test: :meth:`begin`, :meth:`end_phase` for each phase, then :meth:`window` and
    :meth:`check` after the teardown. ``token`` is the session's tag, which the caller has
    joined (:func:`lineage.join`)."""

    def __init__(self, mode: str, grace: float, token: str) -> None:
        self.mode = mode
        self._grace = grace
        self._token = token
        self._pid = os.getpid()
        self._last = lastpid.LastPid()
        self._session_ticks = lineage.boot_ticks()
        self._before_session = _children_now()
        self._start = self._last.read()
        self._marks: dict[str, int] = {}
        self._opens = 0  # the descriptor count at the test's start (LastPid.opens)
        self._phases_known = True
        self._owned: list[tuple[int, int]] = []
        self.mark = self._last.read  # the last pid allocated so far

    def begin(self) -> None:
        """A test starts: what is created from now on may be its leak."""
        self._start = self.mark()
        self._opens = self._last.opens
        self._marks = {}
        self._phases_known = True
        if self._owned:
            self._owned = []

    def end_phase(self, phase: str) -> None:
        """``phase`` of the test ended. (Its mark is peeked: :meth:`window` confirms it.)"""
        self._marks[phase] = self._last.peek()

    def window(self) -> tuple[int, int] | None:
        """After the teardown (before :meth:`check`): the marks of the test's start and of
        the last pid allocated by the end of its teardown; None if none was allocated.

        The common case costs one ``pread``: a peeked end equal to the start. Otherwise the
        end is read again, checked; if our descriptor was lost meanwhile, the phases' peeked
        marks may be anything: what leaked is reported in phase ``unknown``."""
        start, end = self._start, self._marks.get("teardown", self._start)
        if end == start:
            return None
        self._marks["teardown"] = end = self.mark()
        if self._last.opens != self._opens:
            self._phases_known = False
        return None if end == start else (start, end)

    def owned_by_fixture(self, before: int, after: int) -> None:
        """Pids allocated between the marks ``before`` and ``after``, while a wider-scoped
        fixture was set up, belong to that fixture."""
        if after != before:
            self._owned.append((before, after))

    def check(self, nodeid: str) -> Record | None:
        """After ``nodeid``'s teardown and :meth:`window`: the record of what it leaked, if
        anything (and, in ``kill``/``fail`` mode, those processes are ended by then)."""
        start = self._start
        end = self._marks.get("teardown", start)
        self._start = end  # a test whose start is not seen starts where this one ended
        if end == start or os.getpid() != self._pid:  # a forked copy: not ours to check
            return None
        found = {}
        for pid in lineage.window(start, end):
            parent = lineage.live_parent(pid)
            if parent is not None and not self._owned_pid(pid, start):
                found[pid] = parent
        leaked, described = [], []
        for process, pid in self._leaked(found):
            description = _describe(process, self._phase_of(pid, start))
            if description is not None:
                leaked.append(process)
                described.append(description)
        if not leaked:
            return None
        signals: dict[str, list[str]] = {}
        if self.mode in ("kill", "fail"):
            from pytest_expiry import procs  # noqa: PLC0415

            ending = procs.end_processes(leaked, self._grace)
            signals = {str(pid): names for pid, names in ending.signals.items()}
        from pytest_expiry import record  # noqa: PLC0415 - rare path

        return record.leaked(nodeid, self.mode, described, signals)

    def _owned_pid(self, pid: int, start: int) -> bool:
        at = lineage.position(pid, start)
        return any(
            lineage.position(lo, start) < at <= lineage.position(hi, start)
            for lo, hi in self._owned
        )

    def _phase_of(self, pid: int, start: int) -> str:
        if not self._phases_known:
            return "unknown"
        at = lineage.position(pid, start)
        for phase in PHASES:
            mark = self._marks.get(phase)
            if mark is not None and at <= lineage.position(mark, start):
                return phase
        return "teardown"

    def _leaked(self, found: dict[int, int]) -> Iterator[tuple[psutil.Process, int]]:
        """The processes in ``found`` (pid -> parent, all created in the window) that were
        leaked, parents before children: each root the rule charges, with its subtree."""
        from pytest_expiry import procs  # noqa: PLC0415

        procs.keep_importable()
        below: dict[int, list[int]] = {}
        for pid, parent in found.items():
            below.setdefault(parent, []).append(pid)
        pending = self._roots(found, below)[::-1]
        while pending:
            pid = pending.pop()
            process = procs.identify(pid)
            infrastructure = process is not None and procs.never_leaked(process)
            if infrastructure and not lineage.is_fork_of_this_process(pid):
                continue  # nor what is below it (a fork of an xdist worker has its cmdline)
            if process is not None:
                yield process, pid
            # a process that exited since the scan leaves its children to the test
            pending.extend(sorted(below.get(pid, []), reverse=True))

    def _roots(self, found: dict[int, int], below: dict[int, list[int]]) -> list[int]:
        """The roots of the window the rule charges to the test: those whose parent is the
        test process, or that carry the tag while their parent does not (an orphan,
        reparented to a reaper). A root that exited since the scan hands its part to its
        children, which have been reparented by then."""
        charged = []
        queue = [(pid, parent) for pid, parent in sorted(found.items()) if parent not in found]
        while queue:
            pid, parent = queue.pop(0)
            if parent == self._pid:
                charged.append(pid)
            elif lineage.tokens(pid) is None:  # gone (or not ours to read)
                for child in below.get(pid, []):
                    queue.append((child, lineage.live_parent(child) or 0))
            elif lineage.carries(pid, self._token) and not lineage.carries(parent, self._token):
                charged.append(pid)
        return charged

    def end_session(self, interrupted: bool = False) -> list[int]:
        """At the end of the session, in ``kill`` and ``fail`` modes (and in every mode when
        the session was interrupted, as Ctrl-C ends a terminal's foreground job): end every
        process the session started that still runs, as :meth:`check` would find it.
        Returns their pids."""
        if (self.mode not in ("kill", "fail") and not interrupted) or os.getpid() != self._pid:
            return []
        found = {}
        for pid in lineage.listed():  # by start time: pids may have wrapped around since
            parent = lineage.started_after(pid, self._session_ticks)
            if parent is not None and pid not in self._before_session:
                found[pid] = parent
        found = {
            pid: parent
            for pid, parent in found.items()
            if parent == self._pid or lineage.carries(pid, self._token)
        }
        leaked = [process for process, _ in self._leaked(found)]
        if not leaked:
            return []
        from pytest_expiry import procs  # noqa: PLC0415

        procs.end_processes(leaked, self._grace)
        return [p.pid for p in leaked]

    def close(self) -> None:
        self._last.close()


def _children_now() -> set[int]:
    listing = lineage.read_proc(f"/proc/self/task/{os.getpid()}/children") or b""
    return {int(pid) for pid in listing.split()}


def _describe(process: psutil.Process, phase: str) -> dict[str, Any] | None:
    """What a leak report says of ``process``: its pid, parent, command line and the phase
    of the test in which it appeared. None if it exited meanwhile (it is not reported)."""
    import psutil  # noqa: PLC0415

    from pytest_expiry import procs  # noqa: PLC0415
    from pytest_expiry.labels import label_descendant  # noqa: PLC0415

    try:
        with process.oneshot():
            ppid, cmdline = process.ppid(), process.cmdline()
        parent = psutil.Process(ppid).cmdline()
    except psutil.Error:
        return None
    described = {"pid": process.pid, "ppid": ppid, "phase": phase, "cmdline": cmdline}
    described["label"] = label_descendant(cmdline, parent, None)
    return None if procs.gone(process) else described
