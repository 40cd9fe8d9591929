"""Hostile peers of the watchdog's socket: a peer of another user, one whose HELLO names
another pid, a malformed or oversized frame. Each costs its sender its connection and nothing
else: no scope is armed or released for anyone, and the watchdog's queue never raises."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pytest_expiry.protocol.client import ChannelClient
from pytest_expiry.protocol.server import ScopeRequest
from pytest_expiry.protocol.wire import FRAME
from pytest_expiry.timer.api import clock

try:
    from tests.helpers import WatchdogEnd, nobody
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import WatchdogEnd, nobody  # type: ignore[no-redef,import-not-found]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="Unix sockets")


@pytest.fixture
def channel() -> Iterator[WatchdogEnd]:
    queue = WatchdogEnd()
    yield queue
    queue.close()


def frame(kind: bytes, payload: bytes, deadline: float = 0.0) -> bytes:
    return FRAME.pack(kind, deadline, 0.0, 0.0, len(payload)) + payload


def hello(pid: int) -> bytes:
    return frame(b"H", str(pid).encode())


def closed_by_peer(sock: socket.socket, timeout: float = 2.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


AS_NOBODY_PEER = """
import os, socket, struct, sys, time
path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
FRAME = struct.Struct("!cdddI")
def frame(kind, payload, deadline=0.0):
    return FRAME.pack(kind, deadline, 0.0, 0.0, len(payload)) + payload
peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
peer.connect(path)
me = str(os.getpid()).encode()
try:
    peer.sendall(frame(b"H", me) + frame(b"A", b"test_x.py::test_x", time.monotonic() - 1))
except OSError:
    pass
peer.settimeout(5)
try:
    print("closed" if peer.recv(1) == b"" else "open")
except ConnectionResetError:
    print("closed")
except TimeoutError:
    print("open")
"""


def test_a_peer_of_another_user_is_refused_even_if_it_reaches_the_socket() -> None:
    """Defence in depth behind the 0700 directory: ``SO_PEERCRED`` names the peer's user,
    and a peer of another user is disconnected before any of its frames is read."""
    user = nobody()
    channel = WatchdogEnd(mode=0o755)
    try:
        os.chmod(channel.socket_path, 0o777)
        peer = subprocess.Popen(
            [sys.executable, "-c", AS_NOBODY_PEER, channel.socket_path,
             str(user.pw_uid), str(user.pw_gid)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        requests = channel.drain(10, until=lambda _: peer.poll() is not None)
        out, err = peer.communicate(timeout=10)
        assert out.strip() == "closed", err
        assert requests == []
        assert channel.errors == []
    finally:
        channel.close()


def test_a_peer_whose_hello_names_another_pid_is_dropped_and_arms_nothing(
    channel: WatchdogEnd,
) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        forger = channel.connect()
        forger.sendall(hello(stranger.pid) + frame(b"A", b"test_x.py::test_x", clock() - 1))
        requests = channel.drain(0.5)
        assert closed_by_peer(forger)
        arms = [r for r in requests if isinstance(r, ScopeRequest) and not r.is_release]
        assert arms == []
        assert channel.errors == []
    finally:
        stranger.kill()
        stranger.wait()


VICTIM = """
import sys, time
from pytest_expiry.protocol.client import ChannelClient
from pytest_expiry.timer.api import clock
client = ChannelClient(sys.argv[1])
client.arm("test_victim.py::test_victim", clock() + 60, 0.0, clock())
print("armed", flush=True)
sys.stdin.read()
"""


def test_a_peer_whose_hello_names_another_pid_cannot_disarm_that_process(
    channel: WatchdogEnd,
) -> None:
    """Dropping the liar must not release the scopes of the pid it named."""
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, channel.directory],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert victim.stdout is not None and victim.stdout.readline() == "armed\n"
        requests = channel.drain(5, until=lambda got: any(r.worker_id == victim.pid for r in got))
        assert [r.scope_id for r in requests] == ["test_victim.py::test_victim"]
        forger = channel.connect()
        forger.sendall(hello(victim.pid))
        requests = channel.drain(0.5)
        assert closed_by_peer(forger)
        assert not [r for r in requests if r.worker_id == victim.pid], (
            "a forged HELLO released the victim's scopes"
        )
    finally:
        victim.kill()
        victim.wait()


def test_a_malformed_frame_costs_only_its_sender(channel: WatchdogEnd) -> None:
    """A payload that is not UTF-8, a HELLO that is not numbers: the sender is dropped,
    ``get`` never raises, and the peers read after it are still read."""
    not_utf8 = channel.connect()
    not_utf8.sendall(frame(b"A", b"\xff\xfe not utf-8", clock() + 60))
    not_numbers = channel.connect()
    not_numbers.sendall(frame(b"H", b"me,now"))
    channel.drain(0.2)
    good = ChannelClient(channel.directory)
    try:
        good.arm("test_good.py::test_good", clock() + 60, 0.0, clock())
        requests = channel.drain(2, until=bool)
        assert [r.scope_id for r in requests] == ["test_good.py::test_good"]
        assert closed_by_peer(not_utf8)
        assert closed_by_peer(not_numbers)
        assert channel.errors == []
    finally:
        good.close()
        not_utf8.close()
        not_numbers.close()


def test_a_frame_announcing_a_huge_payload_drops_its_sender(channel: WatchdogEnd) -> None:
    """The watchdog never buffers more than one frame's worth for a peer: a frame that
    announces a payload far longer than any scope id ends that peer's connection."""
    liar = channel.connect()
    liar.sendall(hello(os.getpid()) + FRAME.pack(b"A", 1.0, 0.0, 0.0, 1 << 31))
    channel.drain(0.5)
    assert closed_by_peer(liar)
    assert channel.errors == []
