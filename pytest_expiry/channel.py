"""The private channel between test processes and the watchdog: a Unix stream socket.

The socket lives in a directory only the session's user can enter (mode 0700); on Linux the
watchdog also checks each peer's credentials (``SO_PEERCRED``) and refuses other users.

Test process -> watchdog, fixed-size binary frames (cheap on the per-test path)::

    kind (1 byte) | deadline | slow_at | armed_at (doubles) | length (uint32) | payload

``H`` hello (payload: ``pid,create_time``), ``A`` arm a scope (payload: scope id), ``R``
release it. Watchdog -> test process: one JSON object per line (an escalation's event).
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil

from pytest_expiry.timer.api import RequestQueue, TimerClient, TimerRequest

__all__ = ["ALL_SCOPES", "ChannelClient", "ChannelError", "ScopeRequest", "SocketRequestQueue"]

_FRAME = struct.Struct("!cdddI")
_HELLO, _ARM, _RELEASE = b"H", b"A", b"R"
ALL_SCOPES = "*"
"""Scope id of the release a queue emits when a peer disconnects: drop all its timers."""


class ChannelError(OSError):
    """The watchdog cannot be reached any more."""


@dataclass(frozen=True)
class ScopeRequest(TimerRequest):
    """A timer request that may also ask for a SLOW notice at ``slow_at``, and that says
    when the scope started (``armed_at``), for reports of how long it ran."""

    slow_at: float | None = None
    armed_at: float | None = None


class ChannelClient(TimerClient):
    """The test process's end of the channel (one per process, connected once)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._pending = b""
        try:
            self._sock.connect(path)
            me = psutil.Process()
            self._send(_HELLO, 0.0, 0.0, 0.0, f"{me.pid},{me.create_time()!r}")
        except OSError as error:
            self._sock.close()
            raise ChannelError(f"cannot reach the expiry watchdog at {path}: {error}") from error

    def _send(
        self, kind: bytes, deadline: float, slow_at: float, armed_at: float, payload: str
    ) -> None:
        data = payload.encode()
        try:
            self._sock.sendall(_FRAME.pack(kind, deadline, slow_at, armed_at, len(data)) + data)
        except OSError as error:
            raise ChannelError(f"the expiry watchdog went away: {error}") from error

    def acquire(self, scope_id: str, expiration_time: float) -> None:
        self._send(_ARM, expiration_time, 0.0, 0.0, scope_id)

    def arm(self, scope_id: str, deadline: float, slow_at: float, armed_at: float) -> None:
        """Arm ``scope_id``, started at ``armed_at``, with a SLOW notice at ``slow_at``
        (0 for none)."""
        self._send(_ARM, deadline, slow_at, armed_at, scope_id)

    def release(self, scope_id: str) -> None:
        self._send(_RELEASE, -1.0, 0.0, 0.0, scope_id)

    def receive_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event the watchdog sent, waiting at most ``timeout`` seconds."""
        self._sock.settimeout(timeout)
        try:
            while b"\n" not in self._pending:
                chunk = self._sock.recv(65536)
                if not chunk:
                    return None
                self._pending += chunk
        except (TimeoutError, OSError):
            return None
        finally:
            self._sock.settimeout(5.0)
        line, _, self._pending = self._pending.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    def close(self) -> None:
        self._sock.close()


@dataclass
class _Peer:
    sock: socket.socket
    buffer: bytes = b""
    pid: int | None = None
    created: float | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)


def _peer_uid_and_pid(sock: socket.socket) -> tuple[int, int] | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not sys.platform.startswith("linux"):
        return None
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    return uid, pid


class SocketRequestQueue(RequestQueue):
    """The watchdog's end: accepts test processes and turns their frames into requests."""

    def __init__(self, listener: socket.socket) -> None:
        self._listener = listener
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._peers: dict[int, _Peer] = {}
        self._ready: deque[TimerRequest] = deque()

    def size(self) -> int:
        return max(1, len(self._ready))

    def wake(self) -> None:
        self._wake_writer.send(b"\0")

    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        if not self._ready:
            for key, _ in self._selector.select(timeout):
                self._on_readable(key.fileobj)  # type: ignore[arg-type]
        count = min(max(size, 1), len(self._ready))
        return [self._ready.popleft() for _ in range(count)]

    def send_event(self, pid: int, event: dict[str, Any]) -> bool:
        """Send ``event`` to the connected test process ``pid``; False if it is not there."""
        peer = next((p for p in list(self._peers.values()) if p.pid == pid), None)
        if peer is None:
            return False
        try:
            with peer.send_lock:
                peer.sock.sendall(json.dumps(event).encode() + b"\n")
        except OSError:
            return False
        return True

    def _on_readable(self, fileobj: socket.socket) -> None:
        if fileobj is self._listener:
            self._accept()
        elif fileobj is self._wake_reader:
            self._wake_reader.recv(4096)
        else:
            self._read(self._peers[fileobj.fileno()])

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        credentials = _peer_uid_and_pid(sock)
        if credentials is not None and credentials[0] not in (os.getuid(), 0):
            sock.close()
            return
        self._peers[sock.fileno()] = _Peer(sock)
        self._selector.register(sock, selectors.EVENT_READ)

    def _drop(self, peer: _Peer) -> None:
        self._selector.unregister(peer.sock)
        del self._peers[peer.sock.fileno()]
        peer.sock.close()
        if peer.pid is not None:
            self._ready.append(TimerRequest(peer.pid, ALL_SCOPES, -1.0, peer.created))

    def _read(self, peer: _Peer) -> None:
        try:
            chunk = peer.sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(peer)
            return
        peer.buffer += chunk
        while len(peer.buffer) >= _FRAME.size:
            kind, deadline, slow_at, armed_at, length = _FRAME.unpack_from(peer.buffer)
            end = _FRAME.size + length
            if len(peer.buffer) < end:
                return
            payload = peer.buffer[_FRAME.size : end].decode()
            peer.buffer = peer.buffer[end:]
            if not self._accept_frame(peer, kind, (deadline, slow_at, armed_at), payload):
                self._drop(peer)
                return

    def _accept_frame(
        self, peer: _Peer, kind: bytes, times: tuple[float, float, float], payload: str
    ) -> bool:
        if kind == _HELLO:
            pid_text, _, created_text = payload.partition(",")
            credentials = _peer_uid_and_pid(peer.sock)
            peer.pid, peer.created = int(pid_text), float(created_text)
            return credentials is None or credentials[1] == peer.pid
        if peer.pid is None or kind not in (_ARM, _RELEASE):
            return False
        deadline, slow_at, armed_at = times
        expiration = deadline if kind == _ARM else -1.0
        self._ready.append(
            ScopeRequest(peer.pid, payload, expiration, peer.created, slow_at or None, armed_at)
        )
        return True
