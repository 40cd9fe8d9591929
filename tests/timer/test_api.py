"""The seed API, ``pytest_expiry.timer.api``: requests, ``expires``, and the server loop.

Everything here runs in the pytest process. The server loop is driven through an
in-memory :class:`~.doubles.FakeRequestQueue` and a :class:`~.doubles.FakeServer` that
records the workers it would reap instead of signalling anything, as torch's own ``api``
tests do. The loop on a manual clock is in ``test_loop_clock``.
"""

from __future__ import annotations

import logging
import math
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pytest_expiry.timer import TimerRequest, TimerServer, api, clock, configure, expires

from .doubles import (
    FakeRequestQueue,
    FakeServer,
    RecordingClient,
    SleepyRequestQueue,
    arm,
    release,
    tick,
)
from .support import WAIT

LATENCY = 0.1
"""The spec: a worker is reaped within this many seconds of its deadline."""


# --- TimerRequest -----------------------------------------------------------------------


def test_request_has_torch_fields_plus_optional_worker_started() -> None:
    request = TimerRequest(7, "scope", 12.5)
    assert (request.worker_id, request.scope_id, request.expiration_time) == (7, "scope", 12.5)
    assert request.worker_started is None
    assert TimerRequest(7, "scope", 12.5, 99.0).worker_started == 99.0


@pytest.mark.parametrize(
    "other",
    [
        TimerRequest(8, "scope", 12.5, 99.0),
        TimerRequest(7, "other", 12.5, 99.0),
        TimerRequest(7, "scope", 13.0, 99.0),
        TimerRequest(7, "scope", 12.5, 98.0),
    ],
    ids=["worker_id", "scope_id", "expiration_time", "worker_started"],
)
def test_requests_are_equal_exactly_when_all_fields_are(other: TimerRequest) -> None:
    request = TimerRequest(7, "scope", 12.5, 99.0)
    assert request == TimerRequest(7, "scope", 12.5, 99.0)
    assert hash(request) == hash(TimerRequest(7, "scope", 12.5, 99.0))
    assert request != other


@pytest.mark.parametrize(
    ("expiration_time", "is_release"), [(-1, True), (-0.5, True), (0, False), (3.0, False)]
)
def test_negative_expiration_means_release(expiration_time: float, is_release: bool) -> None:
    assert TimerRequest(1, "s", expiration_time).is_release is is_release


def test_request_survives_pickling_between_processes() -> None:
    request = TimerRequest(7, "scope", 12.5, 99.0)
    assert pickle.loads(pickle.dumps(request)) == request


# --- clock ------------------------------------------------------------------------------


def test_deadlines_are_on_the_monotonic_clock() -> None:
    """``time.monotonic`` never jumps with the wall clock and is shared by every process of
    a host (a child process reading it is checked in test_workers)."""
    assert clock is time.monotonic
    assert api.clock is time.monotonic


# --- expires ----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_client")
def test_expires_without_a_client_raises_runtime_error_naming_configure() -> None:
    with pytest.raises(RuntimeError, match=r"configure"):
        expires(after=1)


def test_expires_arms_on_entry_and_releases_the_same_scope_on_exit() -> None:
    client = RecordingClient()
    before = clock()
    with expires(after=5, client=client):
        after = clock()
        assert len(client.calls) == 1
        action, scope, deadline = client.calls[0]
        assert action == "acquire"
        assert deadline is not None
        assert before + 5 <= deadline <= after + 5
    assert client.calls == [("acquire", scope, deadline), ("release", scope, None)]


def test_configured_client_is_the_default_and_an_explicit_client_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "_timer_client", None)
    configured, explicit = RecordingClient(), RecordingClient()
    configure(configured)
    with expires(after=1):
        pass
    with expires(after=1, client=explicit):
        pass
    assert [call[0] for call in configured.calls] == ["acquire", "release"]
    assert [call[0] for call in explicit.calls] == ["acquire", "release"]


def test_a_named_scope_is_used_verbatim() -> None:
    client = RecordingClient()
    with expires(after=1, scope="my-scope", client=client):
        pass
    assert [call[1] for call in client.calls] == ["my-scope", "my-scope"]


def test_nested_unnamed_scopes_are_distinct_and_inner_exit_keeps_outer_armed() -> None:
    client = RecordingClient()
    with expires(after=10, client=client):
        (outer,) = client.armed
        with expires(after=1, client=client):
            assert len(client.armed) == 2
        assert list(client.armed) == [outer]
    assert client.armed == {}


def test_unnamed_scopes_from_the_same_line_are_distinct() -> None:
    client = RecordingClient()
    scopes: list[str] = []
    for _ in range(3):
        with expires(after=1, client=client):
            scopes.extend(client.armed)
    assert len(set(scopes)) == 3


def test_unnamed_scopes_made_inside_a_contextmanager_are_distinct() -> None:
    """torch's bug: inside ``@contextmanager`` the caller frame is contextlib's, so every
    unnamed scope shared one key and an inner release disarmed the outer timer."""
    client = RecordingClient()

    @contextmanager
    def deadline(after: float) -> Iterator[None]:
        with expires(after=after, client=client):
            yield

    with deadline(10):
        with deadline(1):
            assert len(client.armed) == 2
        assert len(client.armed) == 1
        assert next(iter(client.armed.values())) > clock() + 5


@pytest.mark.parametrize("error", [ValueError("boom"), KeyboardInterrupt()], ids=type)
def test_an_exception_inside_expires_propagates_unchanged_and_releases(
    error: BaseException,
) -> None:
    client = RecordingClient()
    with pytest.raises(type(error)) as raised, expires(after=5, client=client):
        raise error
    assert raised.value is error
    assert client.armed == {}
    assert [call[0] for call in client.calls] == ["acquire", "release"]


# --- TimerServer: one iteration of the loop ----------------------------------------------


@pytest.mark.parametrize("max_interval", [0, -1, math.nan])
def test_max_interval_must_be_positive(max_interval: float) -> None:
    with pytest.raises(ValueError, match="max_interval"):
        FakeServer(FakeRequestQueue(), max_interval=max_interval)


def test_an_iteration_reaps_expired_workers_only_and_clears_their_timers() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue)
    now = clock()
    queue.put(arm(1, "a", now - 1), arm(1, "b", now + 60), arm(2, "a", now + 60))
    server._run_watchdog()
    assert server.reaped == [1]
    assert server.deadlines == {(2, "a"): now + 60}


def test_a_release_before_the_deadline_prevents_the_reap() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue)
    queue.put(arm(1, "a", clock() - 1), release(1, "a"))
    server._run_watchdog()
    assert server.reaped == []
    assert server.deadlines == {}


def test_releasing_an_unknown_scope_is_a_no_op() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue)
    deadline = clock() + 60
    queue.put(arm(1, "a", deadline), release(1, "never-armed"), release(99, "a"))
    server._run_watchdog()
    assert server.deadlines == {(1, "a"): deadline}


def test_a_failed_reap_keeps_the_timers_armed_for_the_next_iteration() -> None:
    queue = FakeRequestQueue()
    outcomes = iter([False, True])
    server = FakeServer(queue, max_interval=0.01, reap=lambda worker: next(outcomes))
    queue.put(arm(1, "a", clock() - 1))
    server._run_watchdog()
    assert server.reaped == [1]
    assert (1, "a") in server.deadlines
    server._run_watchdog()
    assert server.reaped == [1, 1]
    assert server.deadlines == {}


def test_a_reap_that_raises_is_contained_and_keeps_the_timers() -> None:
    def explode(worker: Any) -> bool:
        raise OSError("cannot signal")

    queue = FakeRequestQueue()
    server = FakeServer(queue, reap=explode)
    queue.put(arm(1, "a", clock() - 1), arm(2, "a", clock() - 1))
    server._run_watchdog()  # does not raise
    assert sorted(server.reaped) == [1, 2]
    assert set(server.deadlines) == {(1, "a"), (2, "a")}


def test_the_loop_waits_until_the_earliest_deadline_not_max_interval() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue, max_interval=60)
    early = clock() + 5
    queue.put(arm(1, "late", early + 25), arm(2, "early", early))
    server._run_watchdog()  # registers both; nothing is due
    before = clock()
    waited = tick(server, queue)
    assert early - clock() <= waited <= early - before


def test_the_loop_never_waits_longer_than_max_interval() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue, max_interval=0.05)
    queue.put(arm(1, "far", clock() + 3600))
    server._run_watchdog()
    assert tick(server, queue) == 0.05


def test_without_next_expiration_the_loop_polls_every_max_interval() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue, max_interval=60, knows_next=False)
    queue.put(arm(1, "soon", clock() + 1))
    server._run_watchdog()
    assert tick(server, queue) == 60


def test_the_loop_asks_for_every_waiting_request_at_once() -> None:
    queue = FakeRequestQueue()
    server = FakeServer(queue)
    queue.put(*(arm(worker, "a", clock() + 60) for worker in range(5)))
    server._run_watchdog()
    assert len(server.deadlines) == 5
    assert queue.size() == 0


# --- TimerServer: the loop in its thread -------------------------------------------------


def test_the_running_loop_reaps_an_expired_worker_and_keeps_going(
    serve: Callable[[TimerServer], Any],
) -> None:
    queue = FakeRequestQueue()
    server = serve(FakeServer(queue, max_interval=60))
    queue.put(arm(1, "a", clock() - 1), arm(2, "a", clock() + 60))
    assert server.wait_for_reaps(1)
    queue.put(arm(3, "a", clock() - 1))
    assert server.wait_for_reaps(2)
    server.stop()
    assert server.reaped == [1, 3]
    assert set(server.deadlines) == {(2, "a")}


def test_the_running_loop_survives_a_reap_that_raises(serve: Callable[[TimerServer], Any]) -> None:
    calls = iter([OSError("first reap fails")])

    def flaky(worker: Any) -> bool:
        error = next(calls, None)
        if error is not None:
            raise error
        return True

    queue = FakeRequestQueue()
    server = serve(FakeServer(queue, max_interval=0.02, reap=flaky))
    queue.put(arm(1, "a", clock() - 1))
    assert server.wait_for_reaps(2), "the failed reap was not retried"
    server.stop()
    assert server.reaped[:2] == [1, 1]
    assert server.deadlines == {}


def test_the_running_loop_survives_a_failing_iteration(serve: Callable[[TimerServer], Any]) -> None:
    failed = threading.Event()

    class BrokenOnce(FakeServer):
        def register_timers(self, timer_requests: list[TimerRequest]) -> None:
            if not failed.is_set():
                failed.set()
                raise RuntimeError("bad batch")
            super().register_timers(timer_requests)

    queue = FakeRequestQueue()
    server = serve(BrokenOnce(queue, max_interval=60))
    queue.put(arm(1, "lost", clock() - 1))
    assert failed.wait(WAIT)
    queue.put(arm(2, "a", clock() - 1))
    assert server.wait_for_reaps(1)
    server.stop()
    assert server.reaped == [2]


@pytest.mark.parametrize("already_waiting", [False, True], ids=["idle", "waiting-for-later"])
def test_the_running_loop_reaps_within_100ms_of_the_deadline_despite_max_interval_60(
    serve: Callable[[TimerServer], Any], already_waiting: bool
) -> None:
    """An idle server, or one already asleep until a deadline 30 s away, still reaps a
    newly armed timer on time: it wakes at the earliest deadline it holds."""
    queue = FakeRequestQueue()
    server = serve(FakeServer(queue, max_interval=60))
    if already_waiting:
        queue.put(arm(1, "later", clock() + 30))
        assert queue.wait_until_blocked(at_least=20)
    else:
        assert queue.wait_until_blocked(at_least=59)
    deadline = clock() + 0.3
    queue.put(arm(2, "soon", deadline))
    assert server.wait_for_reaps(1)
    ((worker, reaped_at),) = server.reap_calls
    assert worker == 2
    assert deadline <= reaped_at < deadline + LATENCY


@pytest.mark.parametrize("with_timer", [False, True], ids=["idle", "waiting-for-deadline"])
def test_stop_returns_promptly_despite_max_interval_60(
    serve: Callable[[TimerServer], Any], with_timer: bool
) -> None:
    queue = FakeRequestQueue()
    server = serve(FakeServer(queue, max_interval=60))
    if with_timer:
        queue.put(arm(1, "far", clock() + 30))
    assert queue.wait_until_blocked(at_least=20)
    start = clock()
    server.stop()
    assert clock() - start < 1.0
    assert server._watchdog_thread is None


def test_stop_on_a_queue_without_wake_waits_at_most_max_interval(
    serve: Callable[[TimerServer], Any],
) -> None:
    before = set(threading.enumerate())
    server = serve(FakeServer(SleepyRequestQueue(), max_interval=0.2))
    (thread,) = set(threading.enumerate()) - before
    server.stop()
    thread.join(1.0)
    assert not thread.is_alive()


def test_start_twice_keeps_a_single_watchdog_thread(serve: Callable[[TimerServer], Any]) -> None:
    before = set(threading.enumerate())
    server = serve(FakeServer(FakeRequestQueue()))
    server.start()
    assert len(set(threading.enumerate()) - before) == 1


def test_stop_then_start_serves_again(serve: Callable[[TimerServer], Any]) -> None:
    queue = FakeRequestQueue()
    server = serve(FakeServer(queue))
    server.stop()
    server.stop()
    server.start()
    queue.put(arm(1, "a", clock() - 1))
    assert server.wait_for_reaps(1)


def test_stop_before_start_is_harmless() -> None:
    server = FakeServer(FakeRequestQueue())
    server.stop()
    assert server._watchdog_thread is None


def test_a_loop_whose_every_iteration_fails_backs_off_instead_of_spinning(
    serve: Callable[[TimerServer], Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A queue that keeps failing (its reader closed under the server, say) must not turn
    the watchdog into a busy loop that floods the log: one retry per ``max_interval`` (or
    some back-off) is enough. Here ``max_interval`` is 0.1 s; 0.3 s allow a few retries."""

    class BrokenQueue(FakeRequestQueue):
        calls = 0

        def get(self, size: int, timeout: float) -> list[TimerRequest]:
            BrokenQueue.calls += 1
            raise OSError("handle is closed")

    caplog.set_level(logging.CRITICAL + 1, logger=api.__name__)
    server = serve(FakeServer(BrokenQueue(), max_interval=0.1))
    threading.Event().wait(0.3)
    server.stop()
    assert BrokenQueue.calls <= 20
