"""The slow path of a test's scope: what only a test in trouble pays for.

A passing test costs the plugin one hook wrapper (``pytest_runtest_protocol``, which arms and
releases its scope) and a look at its reports. Which phase it is in is read from pytest's
runner frames when the watchdog's interrupt arrives (:func:`pytest_expiry._compat.runtest_phase`),
not tracked by wrappers around every phase. When a scope expires, its deadline passes between
phases, or an attempt fails (it may be run again), :class:`PhaseGate` is registered until the
test's protocol ends. It then

* tells the guard each phase as it begins and ends, so an expiry kept pending between phases is
  raised as the next phase begins (teardown: once it is done);
* starts each rerun's attempt (pytest-rerunfailures) with a fresh deadline;
* completes the report of the phase that expired with the watchdog's account.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol

import pytest

from pytest_expiry.errors import find_expiry
from pytest_expiry.scope import ActiveScope, ScopeGuard
from pytest_expiry.settings import Settings

__all__ = ["ATTEMPT", "DEADLINE", "NO_DEADLINE", "PhaseGate", "limits"]

DEADLINE = pytest.StashKey[tuple[float, bool]]()
"""Each item's ``(seconds, func_only)``, resolved once at collection."""

ATTEMPT = pytest.StashKey[int]()
"""How many times the item's setup began (set once its scope was in trouble)."""

NO_DEADLINE = (0.0, False)


def limits(item: pytest.Item) -> tuple[float, bool]:
    """``item``'s deadline in seconds (0: none) and whether it is ``func_only``."""
    return item.stash.get(DEADLINE, NO_DEADLINE)


class Scopes(Protocol):
    """What the gate needs of :class:`~pytest_expiry.scoping.ScopeHooks`."""

    guard: ScopeGuard | None

    @property
    def settings(self) -> Settings: ...

    def guard_for(self, item: pytest.Item) -> tuple[ScopeGuard | None, float]: ...


class PhaseGate:
    """Registered by :class:`~pytest_expiry.scoping.ScopeHooks` for the rest of one test's
    protocol, from the moment its scope is in trouble."""

    def __init__(self, scopes: Scopes) -> None:
        self._scopes = scopes

    def _in_phase(self, phase: str) -> Generator[None, object, object]:
        __tracebackhide__ = True  # a failing test's traceback shows no frame of ours
        guard = self._scopes.guard
        if guard is None:
            return (yield)
        return (yield from guard.run_phase(phase))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        __tracebackhide__ = True
        self._start_attempt(item)
        return (yield from self._in_phase("setup"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, object, object]:
        __tracebackhide__ = True
        return (yield from self._in_phase("call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self) -> Generator[None, object, object]:
        __tracebackhide__ = True
        return (yield from self._in_phase("teardown"))

    def _start_attempt(self, item: pytest.Item) -> None:
        """Each run of an item's setup after the first starts an attempt with a fresh
        deadline: a rerun (pytest-rerunfailures runs setup, call and teardown again inside one
        ``pytest_runtest_protocol``) is a test run of its own, not the rest of the first."""
        attempt = item.stash.get(ATTEMPT, 1) + 1
        item.stash[ATTEMPT] = attempt
        item.user_properties[:] = [  # what JUnit shows of earlier attempts says whose it was
            (name, f"attempt {attempt - 1}: {value}")
            if name == "expiry" and not str(value).startswith("attempt ")
            else (name, value)
            for name, value in item.user_properties
        ]
        guard = self._scopes.guard
        if guard is not None and guard.owned_by(item) is not None:
            seconds = self._scopes.guard_for(item)[1]
            if seconds:
                guard.arm(item.nodeid, seconds, owner=item)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        guard = self._scopes.guard
        scope = guard.owned_by(item) if guard is not None else None
        if guard is None or scope is None or scope.expired_in != call.when:
            return (yield)
        # answer the watchdog before pytest formats the failure, which can take longer than
        # the grace period (deep tracebacks, slow reprs, a loaded machine)
        guard.answer()
        _point_at_the_hang(item, call)
        report = yield
        self._complete_expiry(guard, scope, call, report, item)
        return report

    def _complete_expiry(
        self,
        guard: ScopeGuard,
        scope: ActiveScope,
        call: pytest.CallInfo[None],
        report: pytest.TestReport,
        item: pytest.Item,
    ) -> None:
        from pytest_expiry.outcome import account, complete_expiry  # noqa: PLC0415 - rare path

        record = account(guard, scope, call.when, self._scopes.settings)
        if call.when == "call" and limits(item)[1]:
            guard.release()  # a func_only scope covers the call alone
        else:
            # what is left of the test starts now, with a fresh deadline: an interrupt for the
            # earlier one that arrives late (the report took long) is then seen as stale
            guard.answer()
        record["attempt"] = item.stash.get(ATTEMPT, 1)
        complete_expiry(record, scope, call, report, item)
        item.ihook.pytest_expiry_expired(item=item, record=record)


def _point_at_the_hang(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Make the failure end where the test hangs: a doctest's example, an async test's
    ``await`` (rather than the event loop's machinery)."""
    from pytest_expiry.asyncdelivery import end_at_the_await  # noqa: PLC0415 - rare path
    from pytest_expiry.doctests import point_at_the_hung_example  # noqa: PLC0415

    point_at_the_hung_example(item, call)
    expired = find_expiry(call.excinfo.value) if call.excinfo is not None else None
    if expired is not None:
        end_at_the_await(expired, str(item.path))
