"""The private channel between test processes and the watchdog: Unix sockets in a directory
that only the session's user can enter (mode 0700). On Linux the watchdog also checks each
peer's credentials (``SO_PEERCRED``) and refuses other users.

Test process -> watchdog, on a stream socket, fixed-size binary frames::

    kind (1 byte) | deadline | slow_at | armed_at (doubles) | length (uint32) | payload

``H`` hello (payload: ``pid,create_time``), ``A`` arm a scope (payload: scope id), ``R``
release it. Watchdog -> test process: one JSON object per line (an escalation's event).

Frames do not wake the watchdog: it sleeps until its next deadline and reads every socket at
least each ``DRAIN_INTERVAL``. Waking it for every frame would cost two context switches per
test, which on a busy machine is most of the plugin's per-test cost. A frame whose deadline
is nearer than ``URGENT_WITHIN``, or one that finds the socket's buffer full, is followed by a
byte on the wake socket, which the watchdog does wait on.
"""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pytest_expiry.timer.api import RequestQueue, TimerClient, TimerRequest, clock

__all__ = [
    "ALL_SCOPES",
    "DRAIN_INTERVAL",
    "ChannelClient",
    "ChannelError",
    "ScopeRequest",
    "SocketRequestQueue",
    "bind_sockets",
]

_FRAME = struct.Struct("!cdddI")
_HELLO, _ARM, _RELEASE = b"H", b"A", b"R"
SOCKET_NAME, WAKE_NAME = "socket", "wake"
STACKS_NAME, EVENTS_NAME = "stacks", "events.jsonl"  # the rest of a session's directory
DRAIN_INTERVAL = 0.5
URGENT_WITHIN = 4 * DRAIN_INTERVAL
_BUFFER = 1 << 20  # room for thousands of frames between drains (the kernel may cap it)
_SEND_PATIENCE = 5.0
_MAX_PAYLOAD = 1 << 16  # a scope id is a node id: a longer frame is not ours
ALL_SCOPES = "*"
"""Scope id of the release a queue emits when a peer disconnects: drop all its timers."""


def bind_sockets(directory: str) -> tuple[socket.socket, socket.socket]:
    """The watchdog's listening stream socket and its wake datagram socket."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(os.path.join(directory, SOCKET_NAME))
        listener.listen(128)
        waker.bind(os.path.join(directory, WAKE_NAME))
    except OSError:
        listener.close()
        waker.close()
        raise
    return listener, waker


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

    def __init__(self, directory: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._waker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._wake_path = os.path.join(directory, WAKE_NAME)
        self._pending = b""
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            self._sock.connect(os.path.join(directory, SOCKET_NAME))
            self._sock.setblocking(False)  # no poll() before each send, and never stuck
            import psutil  # noqa: PLC0415 - the watchdog imports this module and needs no psutil

            me = psutil.Process()
            self._send(_HELLO, 0.0, 0.0, 0.0, f"{me.pid},{me.create_time()!r}")
        except OSError as error:
            self.close()
            raise ChannelError(
                f"cannot reach the expiry watchdog in {directory}: {error}"
            ) from error

    def _send(
        self, kind: bytes, deadline: float, slow_at: float, armed_at: float, payload: str
    ) -> None:
        data = payload.encode()
        frame = _FRAME.pack(kind, deadline, slow_at, armed_at, len(data)) + data
        try:
            sent = self._sock.send(frame)
            if sent < len(frame):
                self._send_slowly(frame[sent:])
            if 0 < deadline < clock() + URGENT_WITHIN or 0 < slow_at < clock() + URGENT_WITHIN:
                self._waker.sendto(b"!", self._wake_path)
        except BlockingIOError:
            self._send_slowly(frame)
        except OSError as error:
            raise ChannelError(f"the expiry watchdog went away: {error}") from error

    def _send_slowly(self, data: bytes) -> None:
        self._waker.sendto(b"!", self._wake_path)  # the buffer is full: have it drained now
        end = clock() + _SEND_PATIENCE
        while data:
            _, writable, _ = select.select([], [self._sock], [], max(0.0, end - clock()))
            if not writable:
                raise ChannelError("the expiry watchdog stopped reading its channel")
            data = data[self._sock.send(data) :]

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
        end = clock() + timeout
        while b"\n" not in self._pending:
            readable, _, _ = select.select([self._sock], [], [], max(0.0, end - clock()))
            if not readable:
                return None
            try:
                chunk = self._sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        event: dict[str, Any] = json.loads(line)
        return event

    def close(self) -> None:
        self._sock.close()
        self._waker.close()


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
    """The watchdog's end: accepts test processes and turns their frames into requests.

    Peers are read on every ``get`` (at least each ``DRAIN_INTERVAL``), not when they write,
    except peers under :meth:`watch`, whose next frame is awaited (an escalation's answer).
    """

    def __init__(self, listener: socket.socket, waker: socket.socket) -> None:
        self._listener = listener
        self._waker = waker
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(waker, selectors.EVENT_READ)
        self._stop_reader, self._stop_writer = socket.socketpair()
        self._selector.register(self._stop_reader, selectors.EVENT_READ)
        self._peers: dict[int, _Peer] = {}
        self._watched: set[int] = set()
        self._ready: deque[TimerRequest] = deque()

    def size(self) -> int:
        return max(1, len(self._ready))

    def wake(self) -> None:
        self._stop_writer.send(b"\0")

    def watch(self, pid: int, watched: bool) -> None:
        """Wake as soon as ``pid`` sends a frame (True), or only at the next drain (False)."""
        for peer in list(self._peers.values()):
            if peer.pid != pid or (peer.sock.fileno() in self._watched) == watched:
                continue
            if watched:
                self._selector.register(peer.sock, selectors.EVENT_READ)
                self._watched.add(peer.sock.fileno())
            else:
                self._selector.unregister(peer.sock)
                self._watched.discard(peer.sock.fileno())

    def get(self, size: int, timeout: float) -> list[TimerRequest]:
        if not self._ready:
            for key, _ in self._selector.select(min(timeout, DRAIN_INTERVAL)):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj in (self._waker, self._stop_reader):
                    self._empty(key.fileobj)
            for peer in list(self._peers.values()):
                self._read(peer)
        count = min(max(size, 1), len(self._ready))
        return [self._ready.popleft() for _ in range(count)]

    @staticmethod
    def _empty(sock: socket.socket) -> None:
        try:
            while sock.recv(4096, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            pass

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

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        credentials = _peer_uid_and_pid(sock)
        if credentials is not None and credentials[0] not in (os.getuid(), 0):
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        self._peers[sock.fileno()] = _Peer(sock)

    def _drop(self, peer: _Peer) -> None:
        if peer.sock.fileno() in self._watched:
            self._watched.discard(peer.sock.fileno())
            self._selector.unregister(peer.sock)
        del self._peers[peer.sock.fileno()]
        peer.sock.close()
        if peer.pid is not None:
            self._ready.append(TimerRequest(peer.pid, ALL_SCOPES, -1.0, peer.created))

    def _read(self, peer: _Peer) -> None:
        while True:
            try:
                chunk = peer.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._drop(peer)
                return
            peer.buffer += chunk
        while len(peer.buffer) >= _FRAME.size:
            kind, deadline, slow_at, armed_at, length = _FRAME.unpack_from(peer.buffer)
            if length > _MAX_PAYLOAD:
                self._drop(peer)
                return
            end = _FRAME.size + length
            if len(peer.buffer) < end:
                return
            try:
                payload = peer.buffer[_FRAME.size : end].decode()
                accepted = self._accept_frame(peer, kind, (deadline, slow_at, armed_at), payload)
            except ValueError:  # not UTF-8, not numbers: a broken or hostile peer
                accepted = False
            peer.buffer = peer.buffer[end:]
            if not accepted:
                self._drop(peer)
                return

    def _accept_frame(
        self, peer: _Peer, kind: bytes, times: tuple[float, float, float], payload: str
    ) -> bool:
        if kind == _HELLO:
            pid_text, _, created_text = payload.partition(",")
            pid, created = int(pid_text), float(created_text)
            credentials = _peer_uid_and_pid(peer.sock)
            if credentials is not None and credentials[1] != pid:
                return False  # it lies about who it is: it may not speak for that pid
            peer.pid, peer.created = pid, created
            return True
        if peer.pid is None or kind not in (_ARM, _RELEASE):
            return False
        deadline, slow_at, armed_at = times
        expiration = deadline if kind == _ARM else -1.0
        self._ready.append(
            ScopeRequest(peer.pid, payload, expiration, peer.created, slow_at or None, armed_at)
        )
        return True
