"""The scope slot: what a test process publishes, and what the watchdog's queue makes of it.

Both ends run in this process, on a real directory, real sockets and a real shared mapping;
forks are real forks.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from pytest_expiry import procs
from pytest_expiry.protocol.client import ChannelClient, ChannelError
from pytest_expiry.protocol.server import ALL_SCOPES, ScopeRequest
from pytest_expiry.protocol.wire import (
    DRAIN_INTERVAL,
    FRAME,
    HEARTBEAT,
    HEARTBEAT_NAME,
    PID_NAME,
    SCOPES_NAME,
    SLOT_SEQUENCE,
    SLOT_SIZE,
)
from pytest_expiry.timer.api import TimerRequest, clock

try:
    from tests.helpers import WatchdogEnd
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import WatchdogEnd  # type: ignore[no-redef,import-not-found]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="Unix sockets and fork")


@pytest.fixture
def watchdog() -> Iterator[WatchdogEnd]:
    end = WatchdogEnd()
    yield end
    end.close()


@pytest.fixture
def client(watchdog: WatchdogEnd) -> Iterator[ChannelClient]:
    connected = ChannelClient(watchdog.directory)
    watchdog.poll()  # the HELLO
    yield connected
    connected.close()


def arms(requests: list[TimerRequest]) -> list[str]:
    return [r.scope_id for r in requests if not r.is_release]


def releases(requests: list[TimerRequest]) -> list[str]:
    return [r.scope_id for r in requests if r.is_release]


def test_an_armed_slot_becomes_one_request_with_the_scopes_times(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    now = clock()
    client.arm("test_a.py::test_a", now + 60, now + 48, now)
    [request] = watchdog.poll()
    assert isinstance(request, ScopeRequest)
    assert (request.worker_id, request.scope_id) == (os.getpid(), "test_a.py::test_a")
    assert (request.expiration_time, request.slow_at, request.armed_at) == (now + 60, now + 48, now)
    assert request.worker_started == procs.start_time(os.getpid())


def test_scopes_that_start_and_end_between_two_reads_cost_the_watchdog_nothing(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    for number in range(1000):
        client.arm(f"test_a.py::test_{number}", clock() + 60, 0.0, clock())
        client.disarm()
    assert watchdog.poll() == []


def test_only_the_latest_scope_is_read_and_the_one_it_replaced_is_released(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_first", clock() + 60, 0.0, clock())
    assert arms(watchdog.poll()) == ["test_a.py::test_first"]
    client.arm("test_a.py::test_second", clock() + 60, 0.0, clock())
    client.arm("test_a.py::test_third", clock() + 60, 0.0, clock())
    requests = watchdog.poll()
    assert releases(requests) == ["test_a.py::test_first"]
    assert arms(requests) == ["test_a.py::test_third"]


def test_a_disarmed_slot_releases_its_scope_once(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_a", clock() + 60, 0.0, clock())
    watchdog.poll()
    client.disarm()
    assert releases(watchdog.poll()) == ["test_a.py::test_a"]
    assert watchdog.poll() == []


def test_rearming_the_same_scope_gives_it_its_new_deadline(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_a", clock() + 60, 0.0, clock())
    watchdog.poll()
    later = clock() + 120
    client.arm("test_a.py::test_a", later, 0.0, clock())
    [request] = watchdog.poll()
    assert (request.scope_id, request.expiration_time) == ("test_a.py::test_a", later)


def test_a_slot_caught_mid_write_is_not_read_until_the_write_ends(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_a", clock() + 60, 0.0, clock())
    watchdog.poll()
    slot = client._slot.memory if client._slot is not None else None
    assert slot is not None
    sequence = SLOT_SEQUENCE.unpack_from(slot, 0)[0]
    SLOT_SEQUENCE.pack_into(slot, 0, sequence + 1)  # odd: a write has begun
    assert watchdog.poll() == []
    client.arm("test_a.py::test_b", clock() + 60, 0.0, clock())  # ...and ends
    assert arms(watchdog.poll()) == ["test_a.py::test_b"]


def woken(watchdog: WatchdogEnd) -> bool:
    """Whether a wake byte is waiting on the watchdog's wake socket (and take it)."""
    try:
        return watchdog.waker.recv(16, socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return False


def test_a_far_deadline_does_not_wake_the_watchdog(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_a", clock() + 60, 0.0, clock())
    client.disarm()
    assert not woken(watchdog)


def test_a_slot_left_mid_write_is_retried_briefly_then_at_the_drain_pace(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    """A writer stopped mid-write (SIGSTOP, Ctrl-Z) must not make the watchdog spin."""
    client.arm("test_a.py::test_a", clock() + 60, 0.0, clock())
    watchdog.poll()
    slot = client._slot.memory if client._slot is not None else None
    assert slot is not None
    SLOT_SEQUENCE.pack_into(slot, 0, SLOT_SEQUENCE.unpack_from(slot, 0)[0] + 1)
    for _ in range(25):
        watchdog.poll(timeout=0.0)  # each read catches the slot mid-write
    started = time.monotonic()
    watchdog.poll(timeout=0.3)
    assert time.monotonic() - started >= 0.25  # waited for its timeout: retries are over


def test_a_near_deadline_wakes_the_watchdog(watchdog: WatchdogEnd, client: ChannelClient) -> None:
    client.arm("test_a.py::test_a", clock() + 0.5, 0.0, clock())
    assert woken(watchdog)


def test_a_near_slow_notice_wakes_the_watchdog(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_a", clock() + 60, clock() + 0.5, clock())
    assert woken(watchdog)


def test_ending_an_overdue_scope_wakes_the_watchdog(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    """The answer an escalation waits for: the write that ends a scope past its deadline."""
    client.arm("test_a.py::test_a", clock() - 1, 0.0, clock() - 2)
    woken(watchdog)
    client.disarm()
    assert woken(watchdog)
    client.arm("test_a.py::test_b", clock() + 60, 0.0, clock())
    assert not woken(watchdog)  # what it replaced was not overdue


def test_a_watchdog_that_does_not_read_its_wake_bytes_never_blocks_the_test_process(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    for number in range(10_000):  # far more than a datagram queue holds
        client.arm(f"test_a.py::test_{number}", clock() + 0.5, 0.0, clock())
    assert woken(watchdog)
    assert arms(watchdog.poll()) == ["test_a.py::test_9999"]


def test_a_closed_client_releases_all_its_scopes_and_removes_its_slot(
    watchdog: WatchdogEnd,
) -> None:
    client = ChannelClient(watchdog.directory)
    client.arm("test_a.py::test_a", clock() + 60, 0.0, clock())
    watchdog.poll()
    client.close()
    requests = watchdog.poll_until(1)
    assert [(r.scope_id, r.is_release) for r in requests] == [(ALL_SCOPES, True)]
    assert os.listdir(os.path.join(watchdog.directory, SCOPES_NAME)) == []


def test_a_dead_watchdog_is_noticed_by_the_next_check(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.check_alive()
    for peer in list(watchdog.queue._peers.values()):
        peer.sock.close()  # what the kernel does when the watchdog dies
    watchdog.queue._peers.clear()
    with pytest.raises(ChannelError, match="went away"):
        client.check_alive()


def test_a_glance_sees_a_hang_up_and_a_heartbeat_gone_stale(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    """``looks_alive`` (the start of each test) costs no wait: False only sends the caller
    to ``check_alive``, which gives a stale heartbeat its chance before it gives up."""
    heartbeat = os.path.join(watchdog.directory, HEARTBEAT_NAME)

    def beat(at: float) -> None:
        with open(heartbeat, "r+b") as written:
            written.write(HEARTBEAT.pack(at))

    beat(clock())
    assert client.looks_alive()
    beat(clock() - 5 * DRAIN_INTERVAL)  # stopped, or dead without closing its socket
    assert not client.looks_alive()
    with pytest.raises(ChannelError, match="has not run"):
        client.check_alive()
    beat(clock())
    assert client.looks_alive()
    for peer in list(watchdog.queue._peers.values()):
        peer.sock.close()
    watchdog.queue._peers.clear()
    assert not client.looks_alive()


def test_a_forked_child_cannot_write_its_parents_slot(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    client.arm("test_a.py::test_parent", clock() + 60, 0.0, clock())
    watchdog.poll()
    pid = os.fork()
    if pid == 0:  # the child runs on as if it were the test process
        status = 0
        try:
            client.arm("test_a.py::test_child", clock() + 60, 0.0, clock())
            client.disarm()
        except BaseException:
            status = 1
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert watchdog.poll() == []  # the parent's scope is untouched
    client.disarm()
    assert releases(watchdog.poll()) == ["test_a.py::test_parent"]


def hello_frame(payload: bytes) -> bytes:
    return FRAME.pack(b"H", 0.0, 0.0, 0.0, len(payload)) + payload


def closed(sock: socket.socket) -> bool:
    sock.settimeout(2.0)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


NOT_SLOTS = {
    "outside": "../elsewhere",
    "missing": "missing",
    "hidden": ".hidden",
    "symlink": "link",
    "fifo": "fifo",
    "directory": "directory",
    "too small": "small",
}


@pytest.mark.parametrize("slot_name", NOT_SLOTS.values(), ids=NOT_SLOTS.keys())
def test_a_hello_naming_something_that_is_not_a_slot_drops_the_peer(
    watchdog: WatchdogEnd, slot_name: str
) -> None:
    scopes = os.path.join(watchdog.directory, SCOPES_NAME)
    elsewhere = os.path.join(watchdog.directory, "elsewhere")
    with open(elsewhere, "wb") as big_enough:
        big_enough.truncate(SLOT_SIZE)
    shutil.copy(elsewhere, os.path.join(scopes, ".hidden"))
    os.symlink(elsewhere, os.path.join(scopes, "link"))
    os.mkfifo(os.path.join(scopes, "fifo"))
    os.mkdir(os.path.join(scopes, "directory"))
    with open(os.path.join(scopes, "small"), "wb") as small:
        small.truncate(SLOT_SIZE - 1)
    peer = watchdog.connect()
    try:
        peer.sendall(hello_frame(f"{os.getpid()},{slot_name}".encode()))
        watchdog.poll(0.2)
        assert closed(peer)
        assert watchdog.poll() == []
    finally:
        peer.close()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs chown")
def test_a_hello_naming_another_users_file_drops_the_peer(watchdog: WatchdogEnd) -> None:
    name = "stranger"
    path = os.path.join(watchdog.directory, SCOPES_NAME, name)
    with open(path, "wb") as theirs:
        theirs.truncate(SLOT_SIZE)
    os.chown(path, 65534, 65534)  # nobody's
    peer = watchdog.connect()
    try:
        peer.sendall(hello_frame(f"{os.getpid()},{name}".encode()))
        watchdog.poll(0.2)
        assert closed(peer)
    finally:
        peer.close()


def test_a_frame_other_than_hello_arms_nothing_and_drops_its_sender(watchdog: WatchdogEnd) -> None:
    """Scopes are published in slots only: the stream carries the HELLO and events."""
    peer = watchdog.connect()
    try:
        scope = b"worker-scope"
        frame = FRAME.pack(b"A", clock() + 60, 0.0, 0.0, len(scope)) + scope
        peer.sendall(hello_frame(str(os.getpid()).encode()) + frame)
        assert arms(watchdog.poll_until(1, seconds=0.5)) == []
        peer.settimeout(2)
        assert peer.recv(1) == b""
    finally:
        peer.close()


def test_the_client_reads_the_watchdogs_pid_from_the_session_directory(
    watchdog: WatchdogEnd, client: ChannelClient
) -> None:
    """The launcher writes it; the socket's peer would be the launcher, not the watchdog."""
    assert client.watchdog_pid() is None  # not written: nothing is guessed
    with open(os.path.join(watchdog.directory, PID_NAME), "w") as out:
        out.write("4242")
    assert client.watchdog_pid() == 4242
