"""The scope state machine, as the specification of :class:`pytest_expiry.scope.ScopeGuard`:

    armed -> expired(phase) -> answered -> released
    armed -> pending (deadline passed between phases) -> expired at the next phase

driven with an injected clock and a recording channel (no watchdog, no real deadline: the
watchdog's interrupt is the handler called as the signal would call it)."""

from __future__ import annotations

import signal
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from pytest_expiry import scope as scope_module
from pytest_expiry.errors import Expired
from pytest_expiry.scope import ScopeGuard

INTERRUPT = signal.SIGUSR2


class RecordingChannel:
    """What the guard writes to the watchdog's slot: ``("arm", nodeid, deadline)`` or
    ``("disarm",)``."""

    directory = "/nonexistent"
    connected = True

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []

    def arm(self, nodeid: str, deadline: float, slow_at: float, armed_at: float) -> None:
        self.writes.append(("arm", nodeid, deadline))

    def disarm(self) -> None:
        self.writes.append(("disarm",))

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(scope_module, "clock", fake)
    return fake


@pytest.fixture
def channel() -> RecordingChannel:
    return RecordingChannel()


@pytest.fixture
def guard(channel: RecordingChannel, clock: Clock) -> Iterator[ScopeGuard]:
    # a stand-in for the ChannelClient the guard is given:
    made = ScopeGuard(channel, INTERRUPT, debugger_pause=False)  # type: ignore[arg-type]
    yield made
    made.close()


def interrupt(guard: ScopeGuard) -> None:
    """The watchdog's interrupt signal arrives."""
    guard._on_interrupt(INTERRUPT, None)


def test_an_armed_scope_is_published_with_its_deadline(
    guard: ScopeGuard, channel: RecordingChannel, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 2.0, owner="item")
    assert scope.state == "armed"
    assert channel.writes == [("arm", "t.py::test", 102.0)]
    assert guard.owned_by("item") is scope
    assert guard.owned_by("another item") is None


def test_an_interrupt_before_the_deadline_changes_nothing_but_answers(
    guard: ScopeGuard, channel: RecordingChannel, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 2.0)
    with guard_in_phase(guard, "call"):
        clock.now += 1.0
        interrupt(guard)  # a late or stray signal: the scope is published again
    assert scope.state == "armed"
    assert channel.writes[-1] == ("arm", "t.py::test", 102.0)


def test_past_its_deadline_in_a_phase_the_interrupt_raises_expired(
    guard: ScopeGuard, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 2.0)
    guard.enter_phase("call")
    clock.now += 2.5
    with pytest.raises(Expired, match=r"still running in call after 2\.50 s \(deadline 2 s\)"):
        interrupt(guard)
    assert (scope.state, scope.expired_in, scope.expired_after) == ("expired", "call", 2.5)


def test_the_answer_gives_what_remains_a_fresh_deadline_of_the_same_length(
    guard: ScopeGuard, channel: RecordingChannel, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 2.0)
    guard.enter_phase("call")
    clock.now += 2.5
    with pytest.raises(Expired):
        interrupt(guard)
    guard.answer()
    assert scope.state == "answered"
    assert channel.writes[-1] == ("arm", "t.py::test", 104.5)
    assert scope.expired_deadline == 102.0  # the account of the expiry is found by this


def test_an_interrupt_in_the_phase_that_already_expired_answers_instead_of_raising(
    guard: ScopeGuard, channel: RecordingChannel, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 1.0)
    guard.enter_phase("call")
    clock.now += 1.5
    with pytest.raises(Expired):
        interrupt(guard)
    clock.now += 1.5  # still formatting the failure when the next interrupt comes
    interrupt(guard)
    assert scope.state == "answered"
    assert channel.writes[-1] == ("arm", "t.py::test", 104.0)


def test_a_deadline_that_passes_between_phases_expires_when_the_next_phase_begins(
    guard: ScopeGuard, channel: RecordingChannel, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 1.0)
    clock.now += 1.5
    interrupt(guard)  # pytest is between setup and call
    assert scope.state == "pending"
    assert channel.writes[-1] == ("arm", "t.py::test", 102.5)  # a short answer, not a fresh scope
    with pytest.raises(Expired, match="its deadline passed before call began"):
        guard.enter_phase("call")
    assert scope.expired_in == "call"


def test_a_teardown_after_a_pending_expiry_runs_with_a_fresh_deadline_and_then_fails(
    guard: ScopeGuard, channel: RecordingChannel, clock: Clock
) -> None:
    scope = guard.arm("t.py::test", 1.0)
    clock.now += 1.5
    interrupt(guard)
    guard.enter_phase("teardown")  # fixtures must be finalized: no exception here
    assert channel.writes[-1] == ("arm", "t.py::test", 102.5)
    clock.now += 0.1
    with pytest.raises(Expired, match="before teardown began"):
        guard.leave_phase()
    assert scope.expired_in == "teardown"


def test_release_ends_the_scope_and_the_watchdog_forgets_it(
    guard: ScopeGuard, channel: RecordingChannel
) -> None:
    scope = guard.arm("t.py::test", 1.0)
    guard.release()
    assert scope.state == "released"
    assert guard.scope is None
    assert channel.writes[-1] == ("disarm",)


def test_run_phase_leaves_the_phase_on_success_and_on_failure(guard: ScopeGuard) -> None:
    guard.arm("t.py::test", 1.0)
    wrapper: Generator[None, str, str] = guard.run_phase("setup")
    next(wrapper)
    assert guard.phase == "setup"
    with pytest.raises(StopIteration):
        wrapper.send("result")
    assert guard.phase is None
    failing: Generator[None, str, str] = guard.run_phase("call")
    next(failing)
    with pytest.raises(ValueError):
        failing.throw(ValueError("the test failed"))
    assert guard.phase is None


class guard_in_phase:
    def __init__(self, guard: ScopeGuard, phase: str) -> None:
        self._guard, self._phase = guard, phase

    def __enter__(self) -> None:
        self._guard.enter_phase(self._phase)

    def __exit__(self, *exc: object) -> None:
        self._guard.leave_phase()
