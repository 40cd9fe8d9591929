"""The watchdog's end of the channel (:mod:`pytest_expiry.protocol.client`): test processes'
slots and frames, turned into timer requests.

A slot is read only when the watchdog wakes, so a test that starts and ends between two
wake-ups costs the watchdog nothing; a slot whose sequence number changed since the last read
becomes the requests that bring the server's timers up to date (release of the scope it
replaced, arm of the new one).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import selectors
import socket
import stat
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import psutil

from pytest_expiry import procs
from pytest_expiry.protocol import wire
from pytest_expiry.timer.api import RequestQueue, TimerRequest, clock

__all__ = ["ALL_SCOPES", "ScopeRequest", "SocketRequestQueue"]

ALL_SCOPES = "*"
"""Scope id of the release a queue emits when a peer disconnects: drop all its timers."""
_BUFFER = 1 << 20
_RETRY_TORN = 0.001  # a slot caught mid-write is read again this soon...
_TORN_RETRIES = 20  # ...this many times (its writer may be stopped mid-write: no spinning)


@dataclass(frozen=True)
class ScopeRequest(TimerRequest):
    """A timer request that may also ask for a SLOW notice at ``slow_at``, and that says
    when the scope started (``armed_at``), for reports of how long it ran."""

    slow_at: float | None = None
    armed_at: float | None = None


@dataclass
class _Slot:
    memory: mmap.mmap
    path: str
    sequence: int = 0
    scope_id: str | None = None  # the armed scope last turned into a request


@dataclass
class _Peer:
    sock: socket.socket
    buffer: bytes = b""
    pid: int | None = None
    created: float | None = None
    slot: _Slot | None = None
    send_lock: threading.Lock = field(default_factory=threading.Lock)


def _peer_uid_and_pid(sock: socket.socket) -> tuple[int, int] | None:
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or not sys.platform.startswith("linux"):
        return None
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, option, 12))
    return uid, pid


def _alive(peer: _Peer) -> bool:
    """Whether the peer's process (by pid and create time) still runs."""
    if peer.pid is None:
        return False
    if procs.start_time(peer.pid) != peer.created:
        return False
    try:
        return psutil.Process(peer.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _map_heartbeat(directory: str) -> mmap.mmap:
    with open(os.path.join(directory, wire.HEARTBEAT_NAME), "r+b") as heartbeat:
        return mmap.mmap(heartbeat.fileno(), wire.HEARTBEAT.size)


def _map_slot(scopes: str, name: str) -> _Slot:
    """Map the slot file ``name`` of ``scopes`` read-only; ValueError if it is not a slot of
    this user's that a peer may name."""
    if not name or name != os.path.basename(name) or name.startswith("."):
        raise ValueError(f"not a slot name: {name!r}")
    path = os.path.join(scopes, name)
    # not following a link, and not waiting for a writer should it be a FIFO
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise ValueError(f"not a slot: {path}")
        if info.st_size < wire.SLOT_SIZE:
            raise ValueError(f"slot too small: {path}")
        return _Slot(mmap.mmap(fd, wire.SLOT_SIZE, access=mmap.ACCESS_READ), path)
    finally:
        os.close(fd)


class SocketRequestQueue(RequestQueue):
    """Accepts test processes; turns their slots and frames into requests.

    Slots and peers are read on every ``get`` (at least each ``wire.DRAIN_INTERVAL``, sooner when
    a wake byte arrives), except peers under :meth:`watch`, whose next frame is awaited.
    """

    def __init__(self, listener: socket.socket, waker: socket.socket) -> None:
        self._listener = listener
        self._waker = waker
        self._scopes = os.path.join(os.path.dirname(listener.getsockname()), wire.SCOPES_NAME)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(waker, selectors.EVENT_READ)
        self._stop_reader, self._stop_writer = socket.socketpair()
        self._selector.register(self._stop_reader, selectors.EVENT_READ)
        self._peers: dict[int, _Peer] = {}
        self._orphans: list[_Peer] = []  # hung up, but their processes live: slots still hold
        self._heartbeat = _map_heartbeat(os.path.dirname(listener.getsockname()))
        self._watched: set[int] = set()
        self._ready: deque[TimerRequest] = deque()
        self._torn = 0  # consecutive reads that caught a slot mid-write
        self._caught_torn = False

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
            retry = 0 < self._torn <= _TORN_RETRIES
            wait = _RETRY_TORN if retry else min(timeout, wire.DRAIN_INTERVAL)
            for key, _ in self._selector.select(wait):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj in (self._waker, self._stop_reader):
                    self._empty(key.fileobj)
            self._caught_torn = False
            wire.HEARTBEAT.pack_into(self._heartbeat, 0, clock())
            for peer in list(self._peers.values()):
                if self._read(peer) and peer.slot is not None and peer.pid is not None:
                    self._read_slot(peer, peer.slot)
            self._read_orphans()
            self._torn = self._torn + 1 if self._caught_torn else 0
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

    def _drop(self, peer: _Peer, hung_up: bool = False) -> None:
        """Forget a peer that broke the protocol; one that only hung up (it closed its
        descriptors, or exec'd) keeps its slot, read as before, while its process lives."""
        if peer.sock.fileno() in self._watched:
            self._watched.discard(peer.sock.fileno())
            self._selector.unregister(peer.sock)
        del self._peers[peer.sock.fileno()]
        peer.sock.close()
        # a client that closed on purpose removed its slot first
        if hung_up and peer.slot is not None and os.path.exists(peer.slot.path) and _alive(peer):
            self._orphans.append(peer)
            return
        self._forget(peer)

    def _read_orphans(self) -> None:
        for peer in list(self._orphans):
            if peer.slot is not None and os.path.exists(peer.slot.path) and _alive(peer):
                self._read_slot(peer, peer.slot)
            else:
                self._orphans.remove(peer)
                self._forget(peer)

    def _forget(self, peer: _Peer) -> None:
        if peer.slot is not None:
            peer.slot.memory.close()
            with contextlib.suppress(OSError):  # its process may have died without removing it
                os.unlink(peer.slot.path)
        if peer.pid is not None:
            self._ready.append(TimerRequest(peer.pid, ALL_SCOPES, wire.RELEASED, peer.created))

    def _read_slot(self, peer: _Peer, slot: _Slot) -> None:
        memory = slot.memory
        sequence, deadline, slow_at, armed_at, length, again = wire.SLOT.unpack_from(memory, 0)
        if sequence == slot.sequence:
            return
        if sequence % 2 or sequence != again or length > wire.MAX_PAYLOAD:
            self._caught_torn = True  # caught mid-write: read it again in a moment
            return
        name = memory[wire.SLOT_NAME_AT : wire.SLOT_NAME_AT + length].decode("utf-8", "replace")
        if wire.SLOT_SEQUENCE.unpack_from(memory, 0)[0] != sequence:
            self._caught_torn = True
            return
        slot.sequence = sequence
        armed = deadline != wire.RELEASED
        if slot.scope_id is not None and (not armed or name != slot.scope_id):
            self._ready.append(ScopeRequest(peer.pid, slot.scope_id, wire.RELEASED, peer.created))
        slot.scope_id = name if armed else None
        if armed:
            self._ready.append(
                ScopeRequest(peer.pid, name, deadline, peer.created, slow_at or None, armed_at)
            )

    def _read(self, peer: _Peer) -> bool:
        """Read what ``peer`` sent; False if it was dropped (gone, or broke the protocol).
        Frames that arrived before a hang-up are taken first (a wire.HELLO, then EOF, is a peer
        that closed its descriptors right after connecting)."""
        hung_up = False
        while True:
            try:
                chunk = peer.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                hung_up = True
                break
            peer.buffer += chunk
        if not self._take_frames(peer):
            self._drop(peer)
            return False
        if hung_up:
            self._drop(peer, hung_up=True)
            return peer in self._orphans
        return True

    def _take_frames(self, peer: _Peer) -> bool:
        while len(peer.buffer) >= wire.FRAME.size:
            kind, _deadline, _slow_at, _armed_at, length = wire.FRAME.unpack_from(peer.buffer)
            if length > wire.MAX_PAYLOAD:
                return False
            end = wire.FRAME.size + length
            if len(peer.buffer) < end:
                return True
            try:
                payload = peer.buffer[wire.FRAME.size : end].decode()
                accepted = self._accept_frame(peer, kind, payload)
            except (ValueError, OSError, psutil.Error):  # a broken or hostile peer
                accepted = False
            peer.buffer = peer.buffer[end:]
            if not accepted:
                return False
        return True

    def _accept_frame(self, peer: _Peer, kind: bytes, payload: str) -> bool:
        return kind == wire.HELLO and peer.pid is None and self._hello(peer, payload)

    def _hello(self, peer: _Peer, payload: str) -> bool:
        """``pid`` or ``pid,slot``: who the peer is, and the name of its slot, if any."""
        pid_text, _, slot_name = payload.partition(",")
        pid = int(pid_text)
        credentials = _peer_uid_and_pid(peer.sock)
        if credentials is not None and credentials[1] != pid:
            return False  # it lies about who it is: it may not speak for that pid
        # the create time tells this process from a later one that reuses its pid
        peer.pid, peer.created = pid, procs.start_time(pid)
        if slot_name:
            peer.slot = _map_slot(self._scopes, slot_name)
        return True
