"""The hooks of the process that runs tests (plain pytest, or each xdist worker).

Per test (called by :class:`~pytest_expiry.pertest.PerTest`): its scope is armed as its protocol
starts (one write to the process's slot) and released as it ends (another), and its teardown
report is checked for a test that ended past its deadline or took most of it (SLOW). A test
whose scope is in trouble (it expired, or an attempt failed and may be run again) gets
:class:`~pytest_expiry.phases.PhaseGate` for the rest of its protocol: the report of the phase
that expired is completed with the watchdog's account, and what remains gets a fresh, bounded
deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from pytest_expiry.budget import SessionBudget
from pytest_expiry.clock import clock
from pytest_expiry.learning import resolve_deadline, session_learning
from pytest_expiry.phases import ATTEMPT, DEADLINE, NO_DEADLINE, PhaseGate, limits
from pytest_expiry.protocol.client import ChannelClient, ChannelError
from pytest_expiry.protocol.wire import stacks_directory
from pytest_expiry.scope import ActiveScope, ScopeGuard
from pytest_expiry.settings import MarkerError, Settings
from pytest_expiry.signals import ExpirySignals
from pytest_expiry.stacks import hook as stackhook
from pytest_expiry.stacks.hook import ChildEnvironment
from pytest_expiry.stacks.native import allow_tracing_by

__all__ = ["ScopeHooks"]

_FUNC_ONLY = "expiry-func-only"
_PHASES = "expiry-phases"
_RESTARTS = 3


class ScopeHooks:
    """Arms a scope per test and reports its expiry. ``connect(fresh)`` is called lazily,
    by the first test that has a deadline, and again with ``fresh`` True when the watchdog
    was found dead or stopped (a new one is started, up to ``_RESTARTS`` times)."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        connect: Callable[[bool], tuple[str, ExpirySignals]],
        budget: SessionBudget | None = None,
    ) -> None:
        self._config = config
        self._settings = settings
        self._connect = connect
        self._budget = budget
        self.guard: ScopeGuard | None = None
        self.unavailable: str | None = None
        self._warned = False
        self._restarts = 0
        self._environment = ChildEnvironment()
        self._gate: PhaseGate | None = None
        self._armed: ScopeGuard | None = None

    def _start_guard(self, fresh: bool = False) -> ScopeGuard | None:
        try:
            directory, signals = self._connect(fresh)
            channel = ChannelClient(directory)
            guard = ScopeGuard(channel, signals.interrupt, self._settings.debugger_pause)
        except (ChannelError, OSError) as error:
            self.unavailable = str(error)
            return None
        watchdog = channel.watchdog_pid()
        if watchdog is not None:
            allow_tracing_by(watchdog)  # for its native unwinder, where Yama restricts ptrace
        stacks = stacks_directory(directory)
        if getattr(self._settings, "child_stacks", "auto") == "hook":
            self._environment.set(stackhook.ENV_STACKS, f"{signals.stacks}:{stacks}")
        stackhook.install(signals.stacks, stacks)
        guard.on_trouble = self._in_trouble
        self.guard = guard
        return guard

    @property
    def settings(self) -> Settings:
        return self._settings

    def live_guard(self) -> ScopeGuard | None:
        """The guard, started if need be; a new watchdog if the one it had is gone."""
        guard = self.guard or self._start_guard()
        if guard is None:
            return None
        guard.check_alive()
        if guard.broken is None:
            return guard
        problem = guard.broken
        self.close()
        self.guard = None
        if self._restarts >= _RESTARTS:
            self._warn(f"{problem}; tests from here on run without deadlines")
            self.unavailable = problem
            return None
        self._restarts += 1
        self._warn(f"{problem}; a new watchdog guards the tests from here on")
        self._warned = False  # a later loss is news again
        return self._start_guard(fresh=True)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(
        self, session: pytest.Session, items: list[pytest.Item]
    ) -> None:
        errors: dict[pytest.Item, str] = {}
        seen: dict[int, dict[str, pytest.Mark]] = {}
        learning = session_learning(self._config)
        func_only = False
        for item in items:
            try:
                resolved = resolve_deadline(item, self._settings, seen, learning)
            except MarkerError as error:
                errors[item] = f"{item.nodeid}: {error}"
            else:
                item.stash[DEADLINE] = resolved
                func_only = func_only or resolved[1]
        if errors and not hasattr(self._config, "workerinput"):
            raise pytest.UsageError("invalid expiry markers:\n  " + "\n  ".join(errors.values()))
        if errors:  # an xdist worker cannot end the run with a usage error: report per item
            from pytest_expiry.report.carry import report_marker_errors  # noqa: PLC0415 - rare

            report_marker_errors(session, errors)
            items[:] = [item for item in items if item not in errors]
        manager = self._config.pluginmanager
        if func_only and not manager.has_plugin(_FUNC_ONLY):
            manager.register(_FuncOnlyScopes(self), _FUNC_ONLY)

    def guard_for(self, item: pytest.Item) -> tuple[ScopeGuard | None, float]:
        """The live guard and ``item``'s deadline (capped by the session budget), or
        ``(None, 0.0)`` when it has none or no watchdog guards the tests."""
        return self._guard_within(limits(item)[0])

    def _guard_within(self, seconds: float) -> tuple[ScopeGuard | None, float]:
        if self._budget is not None:
            seconds = self._budget.cap(seconds)
        if not seconds or self.unavailable is not None:
            return None, 0.0
        guard = self.live_guard()
        if guard is None and self.unavailable and not self._warned:
            self._warn(f"{self.unavailable}; tests from here on run without deadlines")
        return guard, seconds

    def begin(self, item: pytest.Item) -> None:
        """Arm ``item``'s scope (a func_only scope is armed for the call alone)."""
        try:
            seconds, func_only = item.stash[DEADLINE]
        except KeyError:  # an item made after collection: the session budget still bounds it
            seconds, func_only = NO_DEADLINE
        guard = self.guard
        if (
            guard is not None
            and seconds
            and not func_only
            and self._budget is None
            and guard.arm_if_alive(item.nodeid, seconds, item) is not None
        ):
            self._armed = guard  # the common case; otherwise, a closer look first
            return
        if self._budget is not None and self._budget.left() <= 0:
            return  # not run (budget.py): a scope of the minimum length would only expire
        if not func_only:
            guard, seconds = self._guard_within(seconds)
            if guard is not None:
                guard.arm(item.nodeid, seconds, owner=item)
                self._armed = guard

    def end(self, item: pytest.Item) -> None:
        """Release the scope; a test that was in trouble leaves :class:`PhaseGate`."""
        if self._armed is not None:
            self._armed.release()
            self._armed = None
        if self._gate is not None:
            self._config.pluginmanager.unregister(self._gate)
            self._gate = None

    def _in_trouble(self, scope: ActiveScope) -> None:
        """The scope expired, its deadline passed between phases, or an attempt failed:
        from now until the test's protocol ends, :class:`PhaseGate` follows its phases."""
        if self._gate is None and isinstance(scope.owner, pytest.Item):
            scope.owner.stash.setdefault(ATTEMPT, 1)
            self._gate = PhaseGate(self)
            self._config.pluginmanager.register(self._gate, _PHASES)

    def on_report(self, report: pytest.TestReport) -> None:
        """A teardown that ended past the deadline fails; one that took most of it is
        SLOW; a failed attempt may be run again, with a fresh deadline."""
        guard = self.guard
        scope = guard.scope if guard is not None else None
        if guard is None or scope is None or scope.nodeid != report.nodeid:
            return
        if report.when == "teardown" and scope.expired_in is None:
            self._check_overrun(guard, scope, report)
        if report.outcome in ("failed", "rerun"):
            self._in_trouble(scope)  # a failed attempt may be run again (with a fresh deadline)

    def _check_overrun(
        self, guard: ScopeGuard, scope: ActiveScope, report: pytest.TestReport
    ) -> None:
        slow, now = self._settings.slow, clock()
        elapsed = now - scope.armed_at
        if now <= scope.deadline and (not slow or elapsed < slow * scope.seconds):
            return  # the common case: in time, not SLOW
        from pytest_expiry.outcome import ended_late, note_if_slow  # noqa: PLC0415

        if not guard.paused and ended_late(scope, report, self._settings):
            return
        if slow:
            note_if_slow(scope.nodeid, scope.seconds, elapsed, report, slow)

    def _warn(self, problem: str) -> None:
        if self._warned:
            return
        self._warned = True
        reporter: Any = self._config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"pytest-expiry: WARNING {problem}", yellow=True)

    def pytest_enter_pdb(self) -> None:
        if self.guard is not None:
            self.guard.pause()

    def pytest_leave_pdb(self) -> None:
        if self.guard is not None:
            self.guard.resume()

    def close(self) -> None:
        """Give the process back as it was: the interrupt and stacks signals, the
        environment (an in-process nested session must leave its outer one intact)."""
        if self.guard is not None:
            self.guard.close()
            stackhook.uninstall()
            self.guard = None
        self._environment.restore()
        stop = getattr(self._connect, "stop", None)
        if stop is not None:
            stop()
        workeroutput = getattr(self._config, "workeroutput", None)
        if workeroutput is not None and self._settings.exit:
            from pytest_expiry.exit import bound_exit  # noqa: PLC0415

            # an xdist worker's exit, bounded as the controller's is (xdist waits 10 s)
            bound_exit(self._settings.exit, int(workeroutput.get("exitstatus", 0)))


class _FuncOnlyScopes:
    """Scopes around the call phase alone, for items with ``func_only``; registered only
    when a collected item needs it, so other sessions do not pay for the hook."""

    def __init__(self, hooks: ScopeHooks) -> None:
        self._hooks = hooks

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        __tracebackhide__ = True
        guard, seconds = self._hooks.guard_for(item)
        if guard is None or not limits(item)[1]:
            return (yield)
        scope = guard.arm(item.nodeid, seconds, owner=item)
        try:
            return (yield)
        finally:
            if scope.expired_in is None:  # an expired one was released with its report
                guard.release()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        seconds, func_only = limits(item)
        slow = self._hooks.settings.slow
        if call.when == "call" and func_only and seconds and slow:
            from pytest_expiry.outcome import note_if_slow  # noqa: PLC0415

            note_if_slow(item.nodeid, seconds, call.duration, report, slow)
        return report
