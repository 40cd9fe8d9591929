"""``LocalTimerServer``: its timer table, whom it may signal, and its lifecycle.

The table tests feed ``register_timers`` directly. The reaping tests point the server at
an unrelated ``sleep`` process to show it signals a pid only while the pid still names the
process that armed the timer. The lifecycle tests run the real loop on a real
``multiprocessing`` queue.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_expiry import procs
from pytest_expiry.timer import LocalTimerServer, TimerRequest, clock

from .support import WAIT, RecordingServer


def table_server() -> LocalTimerServer:
    """A server whose loop never runs: only its timer table is exercised."""
    return LocalTimerServer(queue.Queue())


def arm(
    worker: Any, scope: str, expiration_time: float, started: float | None = None
) -> TimerRequest:
    return TimerRequest(worker, scope, expiration_time, started)


def release(worker: Any, scope: str) -> TimerRequest:
    return TimerRequest(worker, scope, -1)


def alive(process: subprocess.Popen[bytes]) -> bool:
    return process.poll() is None


# --- the timer table ---------------------------------------------------------------------


def test_an_armed_timer_expires_at_its_deadline_inclusive() -> None:
    server = table_server()
    server.register_timers([arm(1, "a", 10.0)])
    assert server.get_expired_timers(9.99) == {}
    assert server.get_expired_timers(10.0) == {1: [arm(1, "a", 10.0)]}


def test_release_disarms_only_its_own_worker_and_scope() -> None:
    server = table_server()
    server.register_timers([arm(1, "a", 10.0), arm(1, "b", 10.0), arm(2, "a", 10.0)])
    server.register_timers([release(1, "a")])
    assert server.get_expired_timers(100.0) == {1: [arm(1, "b", 10.0)], 2: [arm(2, "a", 10.0)]}


def test_releasing_an_unknown_scope_is_a_no_op() -> None:
    server = table_server()
    server.register_timers([arm(1, "a", 10.0)])
    server.register_timers(
        [release(1, "unknown"), release(2, "a"), release(1, "a"), release(1, "a")]
    )
    assert server.get_expired_timers(100.0) == {}
    assert server.next_expiration(0.0) is None


@pytest.mark.parametrize(
    ("first", "second"), [(10.0, 20.0), (20.0, 10.0)], ids=["later", "earlier"]
)
def test_re_acquiring_a_scope_replaces_its_deadline(first: float, second: float) -> None:
    server = table_server()
    server.register_timers([arm(1, "a", first), arm(1, "a", second)])
    assert server.get_expired_timers(15.0) == ({1: [arm(1, "a", 10.0)]} if second == 10.0 else {})
    assert server.get_expired_timers(100.0) == {1: [arm(1, "a", second)]}
    assert server.next_expiration(0.0) == second


def test_requests_in_one_batch_apply_in_order() -> None:
    server = table_server()
    server.register_timers([release(1, "a"), arm(1, "a", 10.0)])
    server.register_timers([arm(2, "a", 10.0), release(2, "a")])
    assert server.get_expired_timers(100.0) == {1: [arm(1, "a", 10.0)]}


def test_clear_timers_forgets_every_timer_of_the_given_workers_only() -> None:
    server = table_server()
    server.register_timers(
        [arm(1, "a", 10.0), arm(1, "b", 20.0), arm(2, "a", 30.0), arm(3, "a", 40.0)]
    )
    server.clear_timers({1, 3})
    assert server.get_expired_timers(100.0) == {2: [arm(2, "a", 30.0)]}
    server.clear_timers({99})
    assert server.get_expired_timers(100.0) == {2: [arm(2, "a", 30.0)]}


def test_expired_timers_are_grouped_by_worker() -> None:
    server = table_server()
    server.register_timers(
        [arm(1, "a", 1.0), arm(2, "a", 2.0), arm(1, "b", 3.0), arm(1, "c", 50.0)]
    )
    expired = server.get_expired_timers(10.0)
    assert set(expired) == {1, 2}
    assert set(expired[1]) == {arm(1, "a", 1.0), arm(1, "b", 3.0)}
    assert len(expired[1]) == 2
    assert expired[2] == [arm(2, "a", 2.0)]


def test_next_expiration_is_the_earliest_deadline_strictly_after() -> None:
    server = table_server()
    assert server.next_expiration(0.0) is None
    server.register_timers([arm(1, "a", 5.0), arm(2, "a", 3.0), arm(2, "b", 9.0)])
    assert server.next_expiration(0.0) == 3.0
    assert server.next_expiration(3.0) == 5.0
    assert server.next_expiration(8.0) == 9.0
    assert server.next_expiration(9.0) is None


_requests = st.lists(
    st.builds(
        TimerRequest,
        worker_id=st.integers(1, 3),
        scope_id=st.sampled_from(["a", "b", "c"]),
        expiration_time=st.one_of(st.just(-1.0), st.floats(0, 100)),
    ),
    max_size=30,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=_requests, now=st.floats(0, 100))
def test_the_table_keeps_the_last_request_of_each_worker_and_scope(
    requests: list[TimerRequest], now: float
) -> None:
    """Model: a dict from (worker, scope) to the last arm request, a release deleting."""
    model: dict[tuple[Any, str], TimerRequest] = {}
    for request in requests:
        if request.is_release:
            model.pop((request.worker_id, request.scope_id), None)
        else:
            model[(request.worker_id, request.scope_id)] = request
    server = table_server()
    server.register_timers(requests)

    expected: dict[Any, list[TimerRequest]] = {}
    for request in model.values():
        if request.expiration_time <= now:
            expected.setdefault(request.worker_id, []).append(request)
    got = server.get_expired_timers(now)
    assert {w: set(r) for w, r in got.items()} == {w: set(r) for w, r in expected.items()}
    assert sum(map(len, got.values())) == sum(map(len, expected.values()))
    later = [r.expiration_time for r in model.values() if r.expiration_time > now]
    assert server.next_expiration(now) == min(later, default=None)


# --- whom the server may signal ---------------------------------------------------------


def test_reap_kills_the_process_that_armed_the_timer(
    stranger: subprocess.Popen[bytes], kills: list[tuple[int, int]]
) -> None:
    server = table_server()
    started = procs.start_time(stranger.pid)
    assert started is not None
    server.register_timers([arm(stranger.pid, "a", 0.0, started)])
    assert server._reap_worker(stranger.pid) is True
    assert stranger.wait(WAIT) == -signal.SIGKILL
    assert kills == [(stranger.pid, signal.SIGKILL)]


def test_reap_without_a_create_time_takes_the_pid_as_it_is(
    stranger: subprocess.Popen[bytes], kills: list[tuple[int, int]]
) -> None:
    """torch's requests carry no create time; such a timer still reaps its pid."""
    server = table_server()
    server.register_timers([arm(stranger.pid, "a", 0.0)])
    assert server._reap_worker(stranger.pid) is True
    assert stranger.wait(WAIT) == -signal.SIGKILL


def test_reap_never_signals_a_process_that_merely_has_the_workers_pid(
    stranger: subprocess.Popen[bytes], kills: list[tuple[int, int]]
) -> None:
    """A different create time means the worker is gone and its pid was given to another
    process: the timer is done with (True), and the other process is left alone."""
    server = table_server()
    started = procs.start_time(stranger.pid)
    assert started is not None
    server.register_timers([arm(stranger.pid, "a", 0.0, started - 5.0)])
    assert server._reap_worker(stranger.pid) is True
    assert kills == []
    assert alive(stranger)


def test_reap_of_a_worker_that_is_gone_signals_nothing(kills: list[tuple[int, int]]) -> None:
    finished = subprocess.Popen(["true"])
    started = procs.start_time(finished.pid)
    assert finished.wait(WAIT) == 0
    server = table_server()
    server.register_timers([arm(finished.pid, "a", 0.0, started)])
    assert server._reap_worker(finished.pid) is True
    assert kills == []


def test_reap_never_signals_the_server_process_itself(kills: list[tuple[int, int]]) -> None:
    server = table_server()
    me = psutil.Process()
    server.register_timers([arm(me.pid, "a", 0.0, procs.start_time(me.pid))])
    server._reap_worker(me.pid)
    assert kills == []


# --- lifecycle --------------------------------------------------------------------------


def _server_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t not in before and t.is_alive()}


def _children() -> set[tuple[int, float | None]]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found.add((child.pid, procs.start_time(child.pid)))
    return found


@pytest.mark.parametrize("with_timer", [False, True], ids=["idle", "waiting-for-deadline"])
def test_stop_returns_within_a_second_despite_max_interval_60_and_leaks_nothing(
    new_queue: Callable[..., Any], with_timer: bool
) -> None:
    mp_queue = new_queue()
    if with_timer:
        # putting starts the queue's feeder thread, which lives until the queue is closed
        # (after the server has stopped): it is there before and after, not the server's
        mp_queue.put(arm(os.getpid() + 10**6, "far", clock() + 30))
    threads, children = set(threading.enumerate()), _children()
    server = RecordingServer(mp_queue, max_interval=60)
    server.start()
    try:
        if with_timer:
            assert server.wait_until(lambda: len(server.registered) == 1)
        assert len(_server_threads(threads)) == 1
    finally:
        begun = clock()
        server.stop()
        took = clock() - begun
    assert took < 1.0
    assert _server_threads(threads) == set()
    assert _children() == children


def test_a_second_start_never_creates_a_second_watchdog_thread(
    new_queue: Callable[..., Any], serve: Callable[..., Any]
) -> None:
    before = set(threading.enumerate())
    server = serve(LocalTimerServer(new_queue(), max_interval=60))
    (watchdog,) = _server_threads(before)
    server.start()
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait(WAIT)
        server.start()

    starters = [threading.Thread(target=start) for _ in range(4)]
    for thread in starters:
        thread.start()
    for thread in starters:
        thread.join(WAIT)
    assert _server_threads(before) == {watchdog}


def test_a_stopped_server_can_be_started_again(new_queue: Callable[..., Any]) -> None:
    mp_queue = new_queue()
    server = RecordingServer(mp_queue, max_interval=60)
    before = set(threading.enumerate())
    server.start()
    server.stop()
    server.start()
    try:
        assert len(_server_threads(before)) == 1
        mp_queue.put(arm(12345, "a", clock() + 60))
        assert server.wait_until(lambda: len(server.registered) == 1)
    finally:
        server.stop()
        mp_queue.close()
        mp_queue.join_thread()
    assert _server_threads(before) == set()


# --- a recycled pid with timers of both processes ------------------------------------


@pytest.mark.parametrize(
    "expired", ["the-dead-workers", "the-live-workers"], ids=lambda name: f"{name}-timer-expires"
)
def test_timers_of_a_dead_worker_and_of_the_process_reusing_its_pid_are_kept_apart(
    stranger: subprocess.Popen[bytes], kills: list[tuple[int, int]], expired: str
) -> None:
    """A worker armed a timer and exited before its deadline; its pid went to a new
    worker (``stranger``) which armed a timer of its own. When the dead worker's timer
    expires, the new worker must keep its timer; when the new worker's timer expires, the
    new worker must be killed, whatever the dead worker's timer says."""
    thread_queue: queue.Queue[TimerRequest] = queue.Queue()
    server = LocalTimerServer(thread_queue)
    pid, started = stranger.pid, procs.start_time(stranger.pid)
    assert started is not None
    past, future = clock() - 1, clock() + 60
    dead_deadline, live_deadline = (
        (past, future) if expired == "the-dead-workers" else (future, past)
    )
    thread_queue.put(arm(pid, "dead-worker", dead_deadline, started - 5.0))
    thread_queue.put(arm(pid, "live-worker", live_deadline, started))
    server._run_watchdog()
    if expired == "the-dead-workers":
        assert kills == []
        assert alive(stranger)
        assert server.next_expiration(clock()) == future, "the live worker's timer was dropped"
    else:
        # the reap is synchronous: a killed worker is already dead, at most unreaped
        with contextlib.suppress(subprocess.TimeoutExpired):
            stranger.wait(1.0)
        assert stranger.returncode == -signal.SIGKILL, "the live worker escaped its deadline"
