"""Processes a test leaves running after its teardown (``--expiry-leaks``).

The rule: after a test's teardown, a child of the test process that was not there before the
test is LEAKED, with every process below it; except multiprocessing's shared helpers (the
resource tracker and fork server) and processes started while a fixture of wider scope than
``function`` was being set up (they belong to that fixture, which outlives the test).
Processes that existed before the test are never touched.

On Linux the test process is made a child subreaper (``PR_SET_CHILD_SUBREAPER``), so a
process that escaped by a double fork, or by ``setsid`` and a fork, is reparented to it and
is found too. Reading the children costs one small ``/proc`` read per test. Elsewhere leak
detection is off.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psutil is imported when a test leaves a process, not before
    import psutil

__all__ = ["LEAK_MODES", "LeakWatch", "supported"]

LEAK_MODES = ("kill", "warn", "fail", "off")
_PR_SET_CHILD_SUBREAPER = 36


def supported() -> bool:
    return sys.platform.startswith("linux") and os.path.exists(
        f"/proc/self/task/{os.getpid()}/children"
    )


def _become_subreaper() -> None:
    import ctypes  # noqa: PLC0415 - only where leaks are watched

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class LeakWatch:
    """Finds, reports and (in ``kill`` and ``fail`` modes) ends what each test leaves."""

    def __init__(self, mode: str, grace: float) -> None:
        self.mode = mode
        self._grace = grace
        self._pid = os.getpid()
        self._fd = os.open(f"/proc/self/task/{self._pid}/children", os.O_RDONLY)
        self._owned_by_fixtures: set[int] = set()
        _become_subreaper()
        self._checked = b""  # the children list as the last check saw it
        self._known = self._checkpoint()
        self._before_session = set(self._known)

    def _list(self) -> bytes:
        if os.getpid() != self._pid:  # a forked copy of the test process: not ours to check
            return b""
        return os.pread(self._fd, 65536, 0)

    def children(self) -> set[int]:
        """The pids of this process's children (of its main thread, where orphans land)."""
        return _pids(self._list())

    def _checkpoint(self) -> set[int]:
        self._checked = self._list()
        return _pids(self._checked)

    def changed(self) -> bool:
        """Whether the children may differ from those the last check saw (the per-test fast
        path: one read, compared as it is)."""
        return self._list() != self._checked

    def owned_by_fixture(self, pids: set[int]) -> None:
        """Processes a wider-scoped fixture started: not the current test's leak."""
        self._owned_by_fixtures |= pids

    def check(self, nodeid: str) -> dict[str, Any] | None:
        """After ``nodeid``'s teardown: the record of what it leaked, if anything."""
        now = self._checkpoint()
        new = now - self._known - self._owned_by_fixtures
        if not new:
            self._known = now
            return None
        leaked = _leaked_processes(new)
        if not leaked:
            self._known = now
            return None
        record = {
            "event": "leaked",
            "nodeid": nodeid,
            "phase": "teardown",
            "action": self.mode,
            "pids": [p.pid for p in leaked],
            "processes": [_describe(p) for p in leaked],
            "signals": {},
        }
        if self.mode in ("kill", "fail"):
            from pytest_expiry import procs  # noqa: PLC0415

            ending = procs.end_processes(leaked, self._grace)
            record["signals"] = {str(pid): names for pid, names in ending.signals.items()}
            _reap(leaked)
        self._known = self._checkpoint()
        return record

    def end_session(self) -> list[int]:
        """At the end of the session (an interrupted one too, whose last test never reached
        its leak check): end every process the session started that still runs."""
        leaked = _leaked_processes(self.children() - self._before_session)
        if not leaked:
            return []
        from pytest_expiry import procs  # noqa: PLC0415

        procs.end_processes(leaked, self._grace)
        _reap(leaked)
        return [p.pid for p in leaked]


def _pids(listing: bytes) -> set[int]:
    return {int(pid) for pid in listing.split()}


def _leaked_processes(pids: set[int]) -> list[psutil.Process]:
    leaked: list[psutil.Process] = []
    if not pids:
        return leaked
    from pytest_expiry import procs  # noqa: PLC0415

    for pid in sorted(pids):
        process = procs.identify(pid)
        if process is None or procs.gone(process) or procs.is_shared_helper(process):
            continue
        leaked.append(process)
        leaked.extend(procs.tree_of(process))
    return leaked


def _describe(process: psutil.Process) -> dict[str, Any]:
    import psutil  # noqa: PLC0415

    try:
        return {"pid": process.pid, "cmdline": process.cmdline()}
    except psutil.Error:
        return {"pid": process.pid, "cmdline": []}


def _reap(processes: list[psutil.Process]) -> None:
    """Collect the exit status of leaked children of ours: nobody else will any more."""
    for process in processes:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(process.pid, os.WNOHANG)
