"""The server loop on a manual clock: a timer that is due is never slept past.

Issue #11 case 15: the loop asked ``next_expiration(now)`` for deadlines strictly after the
*current* time, so a deadline that passed while it was busy (killing another worker, say)
was neither reaped nor waited for: the server slept ``max_interval`` with it due. Here the
clock is a :class:`~.doubles.ManualClock` that moves only when the loop waits (an
:class:`~.doubles.AutojumpQueue`) or a reap takes time, so such races are set up exactly,
and a wrong wait shows as a reap at the wrong clock reading, not as a slow test.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_expiry.timer import TimerRequest, TimerServer

from .doubles import AutojumpQueue, FakeServer, ManualClock, arm

MAX_INTERVAL = 60.0


def run_passes(server: TimerServer, passes: int) -> None:
    for _ in range(passes):
        server._run_watchdog()


def slow_reaps(manual: ManualClock, seconds: dict[Any, float]) -> Any:
    """A reap outcome that takes ``seconds[worker]`` of clock time and succeeds."""

    def reap(worker: Any) -> bool:
        manual.advance(seconds.get(worker, 0.0))
        return True

    return reap


@pytest.mark.parametrize("filters", [True, False], ids=["filtering", "non-filtering"])
def test_a_deadline_that_passes_while_another_worker_is_reaped_is_acted_on_at_once(
    filters: bool,
) -> None:
    """Worker 1 is due at 100.5 and killing it takes 20 ms; worker 2 was due at 100.51, in
    between. The next wait must be 0, and worker 2 reaped at 100.52, not 60 s later."""
    manual = ManualClock(100.0)
    queue = AutojumpQueue(manual)
    server = FakeServer(
        queue, MAX_INTERVAL, clock=manual, filters=filters, reap=slow_reaps(manual, {1: 0.02})
    )
    queue.deliver(100.0, arm(1, "a", 100.5), arm(2, "a", 100.51))
    run_passes(server, 3)
    assert [worker for worker, _ in server.reap_calls] == [1, 2]
    assert [at for _, at in server.reap_calls] == pytest.approx([100.5, 100.52])
    assert queue.timeouts == [MAX_INTERVAL, pytest.approx(0.5), 0.0]
    assert server.deadlines == {}


def test_a_timer_due_between_two_passes_ends_the_wait_at_once() -> None:
    """Nothing is reaped in the pass at 100.0; before the next pass begins the clock reads
    100.3, past worker 1's deadline of 100.2 (the loop thread was descheduled, say)."""
    manual = ManualClock(100.0)
    queue = AutojumpQueue(manual)
    server = FakeServer(queue, MAX_INTERVAL, clock=manual)
    queue.deliver(100.0, arm(1, "a", 100.2))
    server._run_watchdog()
    assert server.reap_calls == []
    manual.advance(0.3)
    server._run_watchdog()
    assert queue.timeouts[-1] == 0.0
    assert server.reap_calls == [(1, 100.3)]


def test_a_failed_reap_is_retried_on_reap_retry_not_max_interval_and_does_not_spin() -> None:
    manual = ManualClock(100.0)
    outcomes = iter([False, False, True])
    queue = AutojumpQueue(manual)
    server = FakeServer(queue, MAX_INTERVAL, clock=manual, reap=lambda worker: next(outcomes))
    queue.deliver(100.0, arm(1, "a", 100.0))
    run_passes(server, 4)
    retry = TimerServer.reap_retry
    assert [worker for worker, _ in server.reap_calls] == [1, 1, 1]
    assert [at for _, at in server.reap_calls] == pytest.approx(
        [100.0, 100 + retry, 100 + 2 * retry]
    )
    assert queue.timeouts == pytest.approx([MAX_INTERVAL, retry, retry, MAX_INTERVAL])


def test_the_reap_retry_never_exceeds_max_interval() -> None:
    manual = ManualClock(100.0)
    queue = AutojumpQueue(manual)
    server = FakeServer(queue, 0.05, clock=manual, reap=lambda worker: False)
    queue.deliver(100.0, arm(1, "a", 99.0))
    run_passes(server, 2)
    assert queue.timeouts == pytest.approx([0.05, 0.05])


def test_a_non_filtering_server_with_a_failing_reap_still_waits_for_later_deadlines() -> None:
    """A ``next_expiration`` that returns the failed timer's old deadline must neither make
    the loop spin nor hide a later deadline for longer than ``reap_retry``."""
    manual = ManualClock(100.0)
    queue = AutojumpQueue(manual)
    server = FakeServer(
        queue, MAX_INTERVAL, clock=manual, filters=False, reap=lambda worker: worker != 1
    )
    queue.deliver(100.0, arm(1, "a", 100.0), arm(2, "a", 100.25))
    run_passes(server, 4)
    assert all(timeout > 0 for timeout in queue.timeouts)
    ((reaped_at,),) = [[at for worker, at in server.reap_calls if worker == 2]]
    assert 100.25 <= reaped_at <= 100.25 + TimerServer.reap_retry


def test_a_pass_that_fails_after_registering_an_overdue_timer_leaves_it_due() -> None:
    """The loop contains a failing pass and tries again; the timer that pass registered
    (its deadline already behind the last pass) must still end the next wait at once."""
    manual = ManualClock(100.0)

    class FailsOnce(FakeServer):
        failed = False

        def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
            if self.deadlines and not self.failed:
                self.failed = True
                raise RuntimeError("a broken pass")
            return super().get_expired_timers(deadline)

    queue = AutojumpQueue(manual)
    server = FailsOnce(queue, MAX_INTERVAL, clock=manual)
    server._run_watchdog()  # a pass at 160.0 with nothing to do
    queue.deliver(manual(), arm(1, "a", 150.0))
    with pytest.raises(RuntimeError):
        server._run_watchdog()
    server._run_watchdog()
    assert queue.timeouts[-1] == 0.0
    assert server.reaped == [1]


_workers = st.lists(
    st.tuples(
        st.floats(0, 2),  # when the worker's request arrives, after the start
        st.floats(0, 1),  # its deadline, after its arrival
        st.sampled_from([0.0, 0.001, 0.02, 0.3]),  # how long killing it takes
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(workers=_workers, filters=st.booleans())
def test_the_loop_never_waits_past_a_deadline_it_holds(
    workers: list[tuple[float, float, float]], filters: bool
) -> None:
    """Every wait the loop chooses ends no later than the earliest deadline it holds (at
    once if that is due), and every worker is reaped at a reading no earlier than its
    deadline and no later than its deadline plus the time spent reaping the others."""
    manual = ManualClock(100.0)
    server: FakeServer

    def never_past_a_deadline(timeout: float) -> None:
        earliest = min(server.deadlines.values(), default=math.inf)
        assert timeout <= max(0.0, earliest - manual()), (timeout, earliest, manual())

    queue = AutojumpQueue(manual, never_past_a_deadline)
    durations = {worker: cost for worker, (_, _, cost) in enumerate(workers)}
    server = FakeServer(
        queue, MAX_INTERVAL, clock=manual, filters=filters, reap=slow_reaps(manual, durations)
    )
    deadlines = {}
    for worker, (arrival, length, _) in enumerate(workers):
        deadlines[worker] = 100.0 + arrival + length
        queue.deliver(100.0 + arrival, arm(worker, "a", deadlines[worker]))
    for _ in range(4 * len(workers) + 4):
        if not queue.pending and not server.deadlines:
            break
        server._run_watchdog()
    assert sorted(server.reaped) == sorted(deadlines)
    busy = sum(durations.values())
    for worker, at in server.reap_calls:
        assert deadlines[worker] <= at <= deadlines[worker] + busy + 1e-9
