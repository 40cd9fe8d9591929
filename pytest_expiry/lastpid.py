"""The last pid the kernel allocated in this pid namespace: the marks that leak detection
takes at a test's start and at each phase's end (:mod:`pytest_expiry.lineage` says why pids
tell which processes a test created). Linux only: elsewhere :func:`pid_source` is None."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["LastPid", "pid_source"]

_SOURCES = ("/proc/sys/kernel/ns_last_pid", "/proc/loadavg")
_F_SETSIG, _F_GETSIG = 10, 11  # Linux's fcntl commands, not named by every Python
_MARK = 53  # our descriptor's F_SETSIG: one a test opened says 0 (no O_ASYNC: it does nothing)
# where our descriptor lives: away from the numbers a test reuses first, yet inside the
# 64-slot table every process starts with. Growing the table costs a multi-threaded process
# (an xdist worker) an RCU grace period: 10-25 ms of wall time at 512.
_HIGH_FD = 60


def pid_source() -> str | None:
    """The file that says which pid was allocated last, if one can be read."""
    return next((path for path in _SOURCES if os.access(path, os.R_OK)), None)


class LastPid:
    """The last pid the kernel allocated in this pid namespace.

    Read with one ``pread`` of a descriptor kept open. A test may close it
    (``os.closerange(3, 65536)``) and get its number back for a file of its own, so
    :meth:`read` first checks the mark we set on it (``F_SETSIG``): without the mark the
    number is not ours, is neither read nor closed, and a new descriptor is opened. If none
    can be opened (no descriptor left), the last value read is returned: nothing new is
    seen. :meth:`peek` skips the check, for marks that a later :meth:`read` confirms."""

    def __init__(self, path: str | None = None) -> None:
        import fcntl  # noqa: PLC0415 - not on every platform

        self._fcntl = fcntl.fcntl
        self._dup = fcntl.F_DUPFD_CLOEXEC
        self._path = path or pid_source() or _SOURCES[0]
        self._parse: Callable[[bytes], int] = _last_field if "loadavg" in self._path else int
        self._fd = -1
        self._value = 0
        self.opens = 0  # descriptors opened so far: a change means the old one was lost
        self._value = self.read()

    def _open(self) -> int:
        self.opens += 1
        fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            high = self._fcntl(fd, self._dup, _HIGH_FD)
        except OSError:
            high = fd
        else:
            os.close(fd)
        self._fcntl(high, _F_SETSIG, _MARK)
        return high

    def _ours(self) -> bool:
        try:
            return bool(self._fcntl(self._fd, _F_GETSIG) == _MARK)
        except (OSError, ValueError):  # closed (the number is free), or none yet (-1)
            return False

    def read(self) -> int:
        """The last pid allocated (or, if it cannot be read, the last one read)."""
        try:
            if self._fcntl(self._fd, _F_GETSIG) == _MARK:  # the fast path: ours, still open
                self._value = self._parse(os.pread(self._fd, 64, 0))
                return self._value
        except (OSError, ValueError):  # closed (the number is free), or none yet (-1)
            pass
        try:
            self._fd = self._open()  # the old number is left alone: it may be the test's
            self._value = self._parse(os.pread(self._fd, 64, 0))
        except OSError:
            pass
        return self._value

    def peek(self) -> int:
        """The last pid allocated, read without first checking that the descriptor is still
        ours: half the system calls of :meth:`read`. Harmless to a test that took the number
        over (a ``pread`` moves no file offset and consumes nothing from a pipe or socket,
        which refuse it), but then the value may be anything: use it where a later
        :meth:`read` confirms it (:attr:`opens` unchanged) or nothing is lost if it is wrong."""
        try:
            return self._parse(os.pread(self._fd, 64, 0))
        except (OSError, ValueError):  # closed, or taken over by something that is no file
            return self.read()

    def close(self) -> None:
        """Close the descriptor if it is still ours."""
        if self._ours():
            os.close(self._fd)
        self._fd = -1


def _last_field(loadavg: bytes) -> int:
    return int(loadavg.rsplit(None, 1)[-1])
