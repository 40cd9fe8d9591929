"""``MultiprocessingRequestQueue`` and ``LocalTimerClient``: how requests travel.

``get(size, timeout)`` returns at most ``size`` requests, waits at most ``timeout`` for the
first, and returns early when ``wake()`` is called; ``size()`` is a hint that never raises,
even on platforms where ``Queue.qsize()`` raises NotImplementedError (macOS). The same holds
for a ``multiprocessing.SimpleQueue``, which has no ``qsize()`` and no timeout on ``get``.
"""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import select
import signal
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from pytest_expiry import procs
from pytest_expiry.timer import (
    LocalTimerClient,
    LocalTimerServer,
    MultiprocessingRequestQueue,
    TimerRequest,
    clock,
)

from . import workers
from .support import WAIT, running

SLACK = 1.0
"""How much later than asked a ``get`` may return on a loaded machine."""


def requests(count: int) -> list[TimerRequest]:
    return [TimerRequest(worker, "scope", 100.0 + worker) for worker in range(count)]


def flushed(mp_queue: Any, *items: TimerRequest) -> None:
    """Have a forked worker put ``items``; once it has exited, all of them are readable."""
    writer = multiprocessing.get_context("fork").Process(
        target=workers.put_all, args=(mp_queue, list(items))
    )
    with running(writer):
        writer.join(WAIT)
    assert writer.exitcode == 0


class NoQsizeQueue:
    """A ``multiprocessing`` queue as on macOS, where ``qsize()`` is not implemented."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def qsize(self) -> int:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture(params=["Queue", "SimpleQueue"])
def mp_queue(new_queue: Callable[..., Any], request: pytest.FixtureRequest) -> Any:
    """Both kinds of ``multiprocessing`` queue a server can read."""
    return new_queue("fork", request.param)


@pytest.fixture
def full_queue(new_queue: Callable[..., Any]) -> Any:
    """A ``multiprocessing.Queue`` (the kind with ``qsize()``)."""
    return new_queue("fork")


# --- get -------------------------------------------------------------------------------


def test_get_returns_nothing_after_its_timeout(mp_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(mp_queue)
    start = clock()
    assert request_queue.get(10, 0.2) == []
    assert 0.2 <= clock() - start < 0.2 + SLACK


def test_get_returns_a_waiting_request_at_once(mp_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(mp_queue)
    (request,) = requests(1)
    flushed(mp_queue, request)
    start = clock()
    assert request_queue.get(10, 60) == [request]
    assert clock() - start < SLACK


def test_get_returns_at_most_size_requests_in_order(mp_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(mp_queue)
    sent = requests(5)
    flushed(mp_queue, *sent)
    assert request_queue.get(3, 1) == sent[:3]
    assert request_queue.get(10, 1) == sent[3:]
    assert request_queue.get(10, 0.05) == []


def test_get_returns_early_when_woken_from_another_thread(mp_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(mp_queue)
    waking = threading.Timer(0.1, request_queue.wake)
    start = clock()
    waking.start()
    try:
        assert request_queue.get(10, 60) == []
    finally:
        waking.join()
    assert clock() - start < SLACK


def test_a_wake_before_get_still_interrupts_it_and_is_used_up(mp_queue: Any) -> None:
    """``stop()`` may wake the queue just before the loop blocks in ``get``: the wake must
    not be lost. It is used up once: the next ``get`` waits its full timeout."""
    request_queue = MultiprocessingRequestQueue(mp_queue)
    request_queue.wake()
    start = clock()
    assert request_queue.get(10, 60) == []
    assert clock() - start < SLACK
    start = clock()
    assert request_queue.get(10, 0.2) == []
    assert clock() - start >= 0.2


def test_a_request_and_a_wake_together_deliver_the_request(mp_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(mp_queue)
    (request,) = requests(1)
    flushed(mp_queue, request)
    request_queue.wake()
    assert request_queue.get(10, 60) == [request]


def test_a_thread_queue_works_with_its_own_timeout() -> None:
    """Any queue with ``get(block, timeout)`` works; without a pipe to wait on, ``wake()``
    cannot interrupt it but must not fail."""
    thread_queue: queue.Queue[TimerRequest] = queue.Queue()
    request_queue = MultiprocessingRequestQueue(thread_queue)
    sent = requests(3)
    for request in sent:
        thread_queue.put(request)
    assert request_queue.size() == 3
    assert request_queue.get(2, 1) == sent[:2]
    assert request_queue.get(10, 1) == sent[2:]
    request_queue.wake()
    start = clock()
    assert request_queue.get(10, 0.1) == []
    assert 0.1 <= clock() - start < 0.1 + SLACK


# --- size ------------------------------------------------------------------------------


def test_size_counts_waiting_requests(full_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(full_queue)
    assert request_queue.size() == 0
    flushed(full_queue, *requests(4))
    assert request_queue.size() == 4


def test_size_of_a_simple_queue_tells_empty_from_not(new_queue: Callable[..., Any]) -> None:
    """``SimpleQueue`` has no ``qsize()`` at all."""
    simple = new_queue("fork", "SimpleQueue")
    request_queue = MultiprocessingRequestQueue(simple)
    assert request_queue.size() == 0
    flushed(simple, *requests(2))
    assert request_queue.size() >= 1


def test_size_works_where_qsize_raises_not_implemented(full_queue: Any) -> None:
    no_qsize = NoQsizeQueue(full_queue)
    with pytest.raises(NotImplementedError):
        no_qsize.qsize()
    request_queue = MultiprocessingRequestQueue(no_qsize)
    assert request_queue.size() == 0
    sent = requests(2)
    flushed(full_queue, *sent)
    assert request_queue.size() >= 1
    assert request_queue.get(max(1, request_queue.size()), 1)[0] == sent[0]


@pytest.mark.parametrize("kind", ["no-qsize", "SimpleQueue"])
def test_a_server_on_a_queue_without_a_working_qsize_reaps_workers(
    new_queue: Callable[..., Any], serve: Callable[..., Any], kind: str
) -> None:
    """End to end: torch's server calls ``qsize()`` every iteration and dies on macOS."""
    context: Any = multiprocessing.get_context("fork")
    if kind == "SimpleQueue":
        mp_queue = served = new_queue("fork", "SimpleQueue")
    else:
        mp_queue = new_queue("fork")
        served = NoQsizeQueue(mp_queue)
    serve(LocalTimerServer(served, max_interval=60))
    worker = context.Process(target=workers.overrun, args=(mp_queue, 0.3))
    with running(worker):
        worker.join(WAIT)
        assert worker.exitcode == -signal.SIGKILL


# --- LocalTimerClient ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_client_sends_its_own_pid_and_create_time(
    new_queue: Callable[..., Any], method: str
) -> None:
    """A client made and used in the parent, then used in a child (inherited through fork,
    or pickled for spawn), identifies the child there, not the parent."""
    context: Any = multiprocessing.get_context(method)
    mp_queue = new_queue(method)
    client = LocalTimerClient(mp_queue)
    client.acquire("parent", 1.0)
    assert mp_queue.get(timeout=WAIT).worker_id == psutil.Process().pid
    child = context.Process(target=workers.arm_and_release, args=(client, "scope", 42.0))
    with running(child):
        started = procs.start_time(child.pid)
        received = [mp_queue.get(timeout=WAIT), mp_queue.get(timeout=WAIT)]
        child.join(WAIT)
    assert child.exitcode == 0
    assert received == [
        TimerRequest(child.pid, "scope", 42.0, started),
        TimerRequest(child.pid, "scope", -1, started),
    ]
    assert received[1].is_release


def test_the_client_in_the_parent_identifies_the_parent(full_queue: Any) -> None:
    client = LocalTimerClient(full_queue)
    client.acquire("scope", 42.0)
    me = psutil.Process()
    assert full_queue.get(timeout=WAIT) == TimerRequest(
        me.pid, "scope", 42.0, procs.start_time(me.pid)
    )


# --- LocalTimerClient: one atomic write per request ------------------------------------


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_the_client_needs_no_write_lock_and_no_feeder_thread(
    new_queue: Callable[..., Any], kind: str
) -> None:
    """With the queue's write lock held elsewhere for good (by a worker killed while
    holding it, say), a request still arrives at once, and nothing is left to join."""
    mp_queue = new_queue("fork", kind)
    assert mp_queue._wlock.acquire(timeout=WAIT)
    try:
        threads = set(threading.enumerate())
        client = LocalTimerClient(mp_queue)
        sender = threading.Thread(target=client.acquire, args=("scope", 42.0), daemon=True)
        sender.start()
        sender.join(WAIT)
        assert not sender.is_alive(), "acquire() waited for the write lock"
        received = MultiprocessingRequestQueue(mp_queue).get(10, WAIT)
        assert [(r.scope_id, r.expiration_time) for r in received] == [("scope", 42.0)]
        assert set(threading.enumerate()) <= threads, "a feeder thread was started"
    finally:
        mp_queue._wlock.release()


def test_a_queue_fed_by_the_client_keeps_its_item_count(full_queue: Any) -> None:
    client = LocalTimerClient(full_queue)
    client.acquire("a", 1.0)
    client.release("a")
    assert full_queue.qsize() == 2
    assert [full_queue.get(timeout=WAIT).scope_id for _ in range(2)] == ["a", "a"]
    assert full_queue.qsize() == 0


def test_an_over_long_scope_is_sent_under_a_stable_name_that_fits_one_atomic_write(
    full_queue: Any,
) -> None:
    long_a, long_b = "x" * 9000 + "-a", "x" * 9000 + "-b"
    client = LocalTimerClient(full_queue)
    client.acquire(long_a, 1.0)
    client.release(long_a)
    client.acquire(long_b, 1.0)
    armed_a, released_a, armed_b = (full_queue.get(timeout=WAIT) for _ in range(3))
    assert armed_a.scope_id == released_a.scope_id != armed_b.scope_id
    assert armed_a.scope_id.endswith("x-a") and len(armed_a.scope_id) < select.PIPE_BUF
    assert len(pickle.dumps(armed_a, pickle.HIGHEST_PROTOCOL)) + 4 <= select.PIPE_BUF
    assert (armed_a.expiration_time, released_a.is_release) == (1.0, True)


def test_a_short_scope_is_sent_verbatim(full_queue: Any) -> None:
    scope = "tests/test_x.py:12#3" * 20
    LocalTimerClient(full_queue).acquire(scope, 1.0)
    assert full_queue.get(timeout=WAIT).scope_id == scope


def test_the_client_on_a_closed_queue_raises_as_put_does(new_queue: Callable[..., Any]) -> None:
    mp_queue = new_queue("fork")
    mp_queue.close()
    with pytest.raises(ValueError, match="closed"):
        LocalTimerClient(mp_queue).acquire("a", 1.0)
