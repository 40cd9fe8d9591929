"""Descriptors of the plugin's in a process whose code may close them under it.

A test may close every descriptor it did not open (``os.closerange(3, 65536)``, as daemons
do) and then open files that get the same numbers. The plugin must then neither use nor close
a number that is no longer its own: each of its descriptors remembers which open file it is
(device and inode), and is forgotten, not closed, once that changed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import sys

__all__ = ["Mapping", "OwnSocket"]


def _identity(sock: socket.socket) -> tuple[int, int] | None:
    """The (device, inode) of ``sock``'s descriptor, or None if it is closed."""
    try:
        info = os.fstat(sock.fileno())
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


class OwnSocket:
    """A socket that remembers which open file it is, so that once the test closed its
    descriptor (and perhaps opened something else under the same number) it is forgotten
    rather than used or closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._identity = _identity(sock)

    def ours(self) -> bool:
        return self.sock.fileno() >= 0 and _identity(self.sock) == self._identity

    def close(self) -> None:
        if self.ours():
            self.sock.close()
        elif self.sock.fileno() >= 0:
            self.sock.detach()  # not ours any more: forget the number, close nothing


_parked: list[mmap.mmap] = []  # mappings whose descriptor a test took over: never closed


class Mapping:
    """A shared mapping of a file. Before Python 3.13 ``mmap`` keeps a duplicate of the
    file's descriptor and closes it with the mapping; if a test closed that descriptor and
    reused its number, closing the mapping would close the test's file. So the duplicate's
    identity is remembered, and a mapping whose descriptor is not ours any more is parked
    (left open) instead of closed. From 3.13 on the mapping keeps no descriptor at all."""

    def __init__(self, fd: int, size: int, *, writable: bool) -> None:
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._fd = -1
        if sys.version_info >= (3, 13):
            self.memory = mmap.mmap(fd, size, access=access, trackfd=False)
            return
        before = _descriptors()
        self.memory = mmap.mmap(fd, size, access=access)
        info = os.fstat(fd)
        for number in _descriptors() - before:
            with contextlib.suppress(OSError):
                if _same_file(os.fstat(number), info):
                    self._fd, self._identity = number, (info.st_dev, info.st_ino)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                info = os.fstat(self._fd)
                ours = (info.st_dev, info.st_ino) == self._identity
            except OSError:
                ours = False
            if not ours:
                _parked.append(self.memory)
                return
        self.memory.close()


def _descriptors() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
