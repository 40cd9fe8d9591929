"""``MultiprocessingRequestQueue`` and ``LocalTimerClient``: how requests travel.

``get(size, timeout)`` returns at most ``size`` requests, waits at most ``timeout`` for the
first, and returns early when ``wake()`` is called; ``size()`` is a hint that never raises,
even on platforms where ``Queue.qsize()`` raises NotImplementedError (macOS).
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable
from typing import Any

import psutil
import pytest

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


@pytest.fixture
def mp_queue(new_queue: Callable[..., Any]) -> Any:
    return new_queue()


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


def test_a_simple_queue_is_supported_as_documented() -> None:
    simple = multiprocessing.SimpleQueue()
    try:
        request_queue = MultiprocessingRequestQueue(simple)
        (request,) = requests(1)
        simple.put(request)
        assert request_queue.size() >= 0
        assert request_queue.get(10, 1) == [request]
    finally:
        simple.close()


# --- size ------------------------------------------------------------------------------


def test_size_counts_waiting_requests(mp_queue: Any) -> None:
    request_queue = MultiprocessingRequestQueue(mp_queue)
    assert request_queue.size() == 0
    flushed(mp_queue, *requests(4))
    assert request_queue.size() == 4


def test_size_works_where_qsize_raises_not_implemented(mp_queue: Any) -> None:
    no_qsize = NoQsizeQueue(mp_queue)
    with pytest.raises(NotImplementedError):
        no_qsize.qsize()
    request_queue = MultiprocessingRequestQueue(no_qsize)
    assert request_queue.size() == 0
    sent = requests(2)
    flushed(mp_queue, *sent)
    assert request_queue.size() >= 1
    assert request_queue.get(max(1, request_queue.size()), 1)[0] == sent[0]


def test_a_server_on_a_queue_without_qsize_reaps_workers(
    new_queue: Callable[..., Any], serve: Callable[..., Any]
) -> None:
    """End to end: torch's server calls ``qsize()`` every iteration and dies on macOS."""
    context = multiprocessing.get_context("fork")
    mp_queue = new_queue("fork")
    serve(LocalTimerServer(NoQsizeQueue(mp_queue), max_interval=60))
    worker = context.Process(target=workers.overrun, args=(mp_queue, 0.3))
    with running(worker):
        worker.join(WAIT)
        assert worker.exitcode == -9


# --- LocalTimerClient ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_client_sends_its_own_pid_and_create_time(
    new_queue: Callable[..., Any], method: str
) -> None:
    """A client made in the parent and used in a child (inherited through fork, or pickled
    for spawn) identifies the child, not the parent."""
    context = multiprocessing.get_context(method)
    mp_queue = new_queue(method)
    client = LocalTimerClient(mp_queue)
    child = context.Process(target=workers.arm_and_release, args=(client, "scope", 42.0))
    with running(child):
        started = psutil.Process(child.pid).create_time()
        received = [mp_queue.get(timeout=WAIT), mp_queue.get(timeout=WAIT)]
        child.join(WAIT)
    assert child.exitcode == 0
    assert received == [
        TimerRequest(child.pid, "scope", 42.0, started),
        TimerRequest(child.pid, "scope", -1, started),
    ]
    assert received[1].is_release


def test_the_client_in_the_parent_identifies_the_parent(mp_queue: Any) -> None:
    client = LocalTimerClient(mp_queue)
    client.acquire("scope", 42.0)
    me = psutil.Process()
    assert mp_queue.get(timeout=WAIT) == TimerRequest(me.pid, "scope", 42.0, me.create_time())
