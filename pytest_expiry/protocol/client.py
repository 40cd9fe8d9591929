"""The test process's end of the channel to the watchdog (its layout and rules:
:mod:`pytest_expiry.protocol.wire`)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from typing import Any

from pytest_expiry.clock import clock
from pytest_expiry.forks import after_fork_in_child
from pytest_expiry.protocol.descriptors import Mapping as _Mapping
from pytest_expiry.protocol.descriptors import OwnSocket as _OwnSocket
from pytest_expiry.protocol.wire import (
    DRAIN_INTERVAL,
    FRAME,
    HEARTBEAT,
    HEARTBEAT_NAME,
    HELLO,
    MAX_PAYLOAD,
    PID_NAME,
    RELEASED,
    SCOPES_NAME,
    SLOT,
    SLOT_NAME_AT,
    SLOT_SEQUENCE,
    SLOT_SIZE,
    SOCKET_NAME,
    URGENT_WITHIN,
    WAKE_NAME,
)

__all__ = ["ChannelClient", "ChannelError"]

_BEAT_PATIENCE = 0.25
_BUFFER = 1 << 20  # room for the A/R frames of many scopes between drains
_SEND_PATIENCE = 5.0


class ChannelError(OSError):
    """The watchdog cannot be reached any more."""


class ChannelClient:
    """The test process's end of the channel (one per process, connected once):
    :meth:`arm` and :meth:`disarm` publish the process's current scope in its slot."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._sock = _OwnSocket(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        self._waker = _OwnSocket(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        self._wake_path = os.path.join(directory, WAKE_NAME)
        self._slot: _Mapping | None = None
        self._heartbeat: _Mapping | None = None
        self._slot_path = ""
        self._sequence = 0
        self._published = RELEASED
        self._pending = b""
        try:
            self._open_slot(os.path.join(directory, SCOPES_NAME))
            self._heartbeat = _map_read_only(os.path.join(directory, HEARTBEAT_NAME))
            sock = self._sock.sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            sock.connect(os.path.join(directory, SOCKET_NAME))
            sock.setblocking(False)  # no poll() before each send, and never stuck
            self._sock = _OwnSocket(sock)
            self._waker.sock.setblocking(False)
            self._send(HELLO, 0.0, 0.0, 0.0, f"{os.getpid()},{os.path.basename(self._slot_path)}")
        except OSError as error:
            self.close()
            raise ChannelError(
                f"cannot reach the expiry watchdog in {directory}: {error}"
            ) from error
        self._hangup = select.poll()
        self._hangup.register(sock, select.POLLHUP)
        after_fork_in_child(self.detach)  # a forked child must not speak for its parent

    def _open_slot(self, scopes: str) -> None:
        self._slot_path = os.path.join(scopes, str(os.getpid()))
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self._slot_path, flags, 0o600)
        except FileExistsError:  # left by an earlier process with this pid
            os.unlink(self._slot_path)
            fd = os.open(self._slot_path, flags, 0o600)
        try:
            os.ftruncate(fd, SLOT_SIZE)
            self._slot = _Mapping(fd, SLOT_SIZE, writable=True)
        finally:
            os.close(fd)

    def arm(self, scope_id: str, deadline: float, slow_at: float, armed_at: float) -> None:
        """Publish ``scope_id`` as this process's current scope (replacing the earlier one),
        started at ``armed_at``, with a SLOW notice at ``slow_at`` (0 for none)."""
        now = self._write(deadline, slow_at, armed_at, scope_id.encode()[:MAX_PAYLOAD])
        if 0 < deadline < now + URGENT_WITHIN or 0 < slow_at < now + URGENT_WITHIN:
            self.wake()

    def disarm(self) -> None:
        """This process has no current scope any more."""
        self._write(RELEASED, 0.0, 0.0, b"")

    def _write(self, deadline: float, slow_at: float, armed_at: float, name: bytes) -> float:
        """Write the slot; wake the watchdog if the scope replaced is overdue (it may be
        escalating it, and waits for this answer). Returns the time of the write."""
        now = clock()
        if self._slot is None:
            return now
        slot = self._slot.memory
        self._sequence += 1
        SLOT_SEQUENCE.pack_into(slot, 0, self._sequence)  # odd: being written
        slot[SLOT_NAME_AT : SLOT_NAME_AT + len(name)] = name
        self._sequence += 1
        sequence = self._sequence
        SLOT.pack_into(slot, 0, sequence, deadline, slow_at, armed_at, len(name), sequence)
        overdue, self._published = 0 < self._published <= now, deadline
        if overdue:
            self.wake()
        return now

    def wake(self) -> None:
        """Have the watchdog read the slots now rather than at its next drain."""
        if not self._waker.ours():  # the test closed it: a new one, once
            self._waker.close()
            self._waker = _OwnSocket(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
            self._waker.sock.setblocking(False)
        try:
            self._waker.sock.sendto(b"!", self._wake_path)
        except BlockingIOError:
            pass  # its queue is full of wake bytes already: it will read the slots
        except OSError as error:
            raise ChannelError(f"the expiry watchdog went away: {error}") from error

    def watchdog_pid(self) -> int | None:
        """The watchdog's pid, as its launcher wrote it in the session's directory; None if
        that cannot be read. (The socket's ``SO_PEERCRED`` would name the process that bound
        it, the launcher, not the watchdog.)"""
        try:
            with open(os.path.join(self.directory, PID_NAME)) as written:
                return int(written.read())
        except (OSError, ValueError):
            return None

    @property
    def connected(self) -> bool:
        """Whether the stream socket (events, frames) is still this client's."""
        return self._sock.ours()

    def check_alive(self) -> None:
        """Raise :class:`ChannelError` if the watchdog is gone: its socket hung up, or its
        heartbeat stopped (dead, or stopped by a signal). A heartbeat older than two drains
        gets a wake byte and up to ``_BEAT_PATIENCE`` to move, so a watchdog stopped just
        before this test is found now rather than after the test hung."""
        if self._heartbeat is None:
            return
        if self._hangup.poll(0) and self._sock.ours():
            raise ChannelError("the expiry watchdog went away (its socket was closed)")
        beat = self._beat()
        if clock() - beat <= 2 * DRAIN_INTERVAL:
            return
        self.wake()
        end = clock() + _BEAT_PATIENCE
        while clock() < end:
            if self._beat() != beat:
                return
            time.sleep(0.005)
        raise ChannelError(
            f"the expiry watchdog has not run for {clock() - beat:.1f} s (stopped or dead)"
        )

    def looks_alive(self) -> bool:
        """At a glance, for the start of each test: the socket has not hung up and the
        heartbeat is recent. False says only "look closer" (:meth:`check_alive`)."""
        heartbeat = self._heartbeat
        return (
            heartbeat is not None
            and not self._hangup.poll(0)
            and (clock() - HEARTBEAT.unpack_from(heartbeat.memory, 0)[0] <= 2 * DRAIN_INTERVAL)
        )

    def _beat(self) -> float:
        assert self._heartbeat is not None
        beat: float = HEARTBEAT.unpack_from(self._heartbeat.memory, 0)[0]
        return beat

    def _send(
        self, kind: bytes, deadline: float, slow_at: float, armed_at: float, payload: str
    ) -> None:
        data = payload.encode()
        frame = FRAME.pack(kind, deadline, slow_at, armed_at, len(data)) + data
        if not self._sock.ours():
            raise ChannelError("the channel's socket was closed by the test")
        sock = self._sock.sock
        try:
            sent = sock.send(frame)
            if sent < len(frame):
                self._send_slowly(frame[sent:])
            if 0 < deadline < clock() + URGENT_WITHIN:
                self.wake()
        except BlockingIOError:
            self._send_slowly(frame)
        except OSError as error:
            raise ChannelError(f"the expiry watchdog went away: {error}") from error

    def _send_slowly(self, data: bytes) -> None:
        self.wake()  # the buffer is full: have it drained now
        end = clock() + _SEND_PATIENCE
        sock = self._sock.sock
        while data:
            _, writable, _ = select.select([], [sock], [], max(0.0, end - clock()))
            if not writable:
                raise ChannelError("the expiry watchdog stopped reading its channel")
            data = data[sock.send(data) :]

    def receive_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event the watchdog sent, waiting at most ``timeout`` seconds (None at
        once when the socket is no longer this client's)."""
        end = clock() + timeout
        while b"\n" not in self._pending:
            if not self._sock.ours():
                return None
            sock = self._sock.sock
            try:
                readable, _, _ = select.select([sock], [], [], max(0.0, end - clock()))
                if not readable:
                    return None
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except (OSError, ValueError):
                return None
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    def _unmap(self) -> None:
        for memory in (self._slot, self._heartbeat):
            if memory is not None:
                memory.close()
        self._slot = self._heartbeat = None

    def detach(self) -> None:
        """Stop speaking for the process (in a forked child): close this copy, touch nothing
        the parent still uses."""
        self._unmap()
        self._sock.close()
        self._waker.close()

    def close(self) -> None:
        if self._slot is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._slot_path)
        self._unmap()
        self._sock.close()
        self._waker.close()


def _map_read_only(path: str) -> _Mapping:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        return _Mapping(fd, HEARTBEAT.size, writable=False)
    finally:
        os.close(fd)
