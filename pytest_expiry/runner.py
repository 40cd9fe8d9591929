"""The hooks of the process that runs tests (plain pytest, or each xdist worker).

Per test: one frame to arm its scope when the test protocol starts, one to release it when
it ends. When the guard raised ``Expired``, the phase's report is completed with the
watchdog's account (processes, signals, stacks) and the rest of the test gets a fresh,
bounded deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from pytest_expiry import stackhook
from pytest_expiry.budget import SessionBudget
from pytest_expiry.channel import ChannelClient, ChannelError, stacks_directory
from pytest_expiry.errors import find_expiry
from pytest_expiry.guard import ActiveScope, Guard
from pytest_expiry.labels import name_xdist_worker
from pytest_expiry.learning import deadline_source, resolve_deadline
from pytest_expiry.native import allow_tracing_by
from pytest_expiry.settings import MarkerError, Settings
from pytest_expiry.signals import ExpirySignals
from pytest_expiry.stackhook import ChildEnvironment
from pytest_expiry.timer.api import clock

# pytest_expiry.records (and the report's module it needs) is imported where a record is made

__all__ = ["DEADLINE", "ExpiryRunner"]

DEADLINE = pytest.StashKey[tuple[float, bool]]()
"""Each item's ``(seconds, func_only)``, resolved once at collection."""

_NO_DEADLINE = (0.0, False)
_ATTEMPT = pytest.StashKey[int]()  # how many times the item's setup began
_EVENT_MARGIN = 2.0
_FUNC_ONLY = "expiry-func-only"
_RESTARTS = 3


class ExpiryRunner:
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
        if budget is not None:
            config.pluginmanager.register(budget, "expiry-session-budget")
        self.guard: Guard | None = None
        self.unavailable: str | None = None
        self._warned = False
        self._hung_modules = 0
        self._restarts = 0
        self._environment = ChildEnvironment()
        from pytest_expiry.leakcheck import adopt_per_test_hooks  # noqa: PLC0415

        self._leaks = adopt_per_test_hooks(config.pluginmanager)  # None: leak detection is off

    def _start_guard(self, fresh: bool = False) -> Guard | None:
        try:
            directory, signals = self._connect(fresh)
            channel = ChannelClient(directory)
            guard = Guard(channel, signals.interrupt, self._settings.debugger_pause)
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
        self.guard = guard
        return guard

    def _live_guard(self) -> Guard | None:
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
        for item in items:
            try:
                item.stash[DEADLINE] = resolve_deadline(item, self._settings, seen)
            except MarkerError as error:
                errors[item] = f"{item.nodeid}: {error}"
        if errors and not hasattr(self._config, "workerinput"):
            raise pytest.UsageError("invalid expiry markers:\n  " + "\n  ".join(errors.values()))
        if errors:  # an xdist worker cannot end the run with a usage error: report per item
            from pytest_expiry.records import report_marker_errors  # noqa: PLC0415

            report_marker_errors(session, errors)
            items[:] = [item for item in items if item not in errors]
        manager = self._config.pluginmanager
        if any(
            item.stash.get(DEADLINE, _NO_DEADLINE)[1] for item in items
        ) and not manager.has_plugin(_FUNC_ONLY):
            manager.register(_FuncOnlyScopes(self), _FUNC_ONLY)

    def guard_for(self, item: pytest.Item) -> tuple[Guard | None, float]:
        seconds, _func_only = item.stash.get(DEADLINE, _NO_DEADLINE)
        if self._budget is not None:
            seconds = self._budget.cap(seconds)
        if not seconds or self.unavailable is not None:
            return None, 0.0
        guard = self._live_guard()
        if guard is None and self.unavailable and not self._warned:
            self._warn(f"{self.unavailable}; tests from here on run without deadlines")
        return guard, seconds

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        guard, seconds = self.guard_for(item)
        if guard is None or item.stash.get(DEADLINE, _NO_DEADLINE)[1]:
            return (yield)
        guard.arm(item.nodeid, seconds, owner=item)
        try:
            return (yield)
        finally:
            guard.release()

    def _in_phase(self, phase: str) -> Generator[None, object, object]:
        """Tell the guard which phase pytest is in while it runs it."""
        guard = self.guard
        if guard is None:
            return (yield)
        guard.enter_phase(phase)
        try:
            result = yield
        except BaseException:
            guard.phase = None
            raise
        guard.leave_phase()
        return result

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        if self._leaks is not None:  # the test's window for leak detection opens
            self._leaks.begin()
        self._start_attempt(item)
        return (yield from self._in_phase("setup"))

    def _start_attempt(self, item: pytest.Item) -> None:
        """Each run of an item's setup starts an attempt with a fresh deadline: a rerun
        (pytest-rerunfailures runs setup, call and teardown again inside one
        ``pytest_runtest_protocol``) is a test run of its own, not the rest of the first."""
        attempt = item.stash.get(_ATTEMPT, 0) + 1
        item.stash[_ATTEMPT] = attempt
        if attempt > 1:  # what JUnit shows of the earlier attempts says whose it was
            item.user_properties[:] = [
                (name, f"attempt {attempt - 1}: {value}")
                if name == "expiry" and not str(value).startswith("attempt ")
                else (name, value)
                for name, value in item.user_properties
            ]
        guard = self.guard
        if attempt > 1 and guard is not None and guard.scope is not None:
            seconds = self.guard_for(item)[1]
            if guard.scope.owner is item and seconds:
                guard.arm(item.nodeid, seconds, owner=item)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self) -> Generator[None, object, object]:
        return (yield from self._in_phase("call"))

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self) -> Generator[None, object, object]:
        return (yield from self._in_phase("teardown"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        guard = self.guard
        scope = guard.scope if guard is not None else None
        if scope is not None and scope.owner is not item:
            scope = None
        if guard is not None and scope is not None and scope.expired_in == call.when:
            # answer the watchdog before pytest formats the failure, which can take longer
            # than the grace period (deep tracebacks, slow reprs, a loaded machine)
            guard.rearm(scope.seconds)
            from pytest_expiry.doctests import point_at_the_hung_example  # noqa: PLC0415

            point_at_the_hung_example(item, call)
            expired = find_expiry(call.excinfo.value) if call.excinfo is not None else None
            if expired is not None:
                from pytest_expiry.asyncdelivery import end_at_the_await  # noqa: PLC0415

                end_at_the_await(expired, str(item.path))
        leaks = self._leaks
        changed = leaks.end_phase(call.when) if leaks is not None else False
        report = yield
        if leaks is not None and call.when == "teardown":
            leaks.after_teardown(item, report, changed)
        if guard is not None and scope is not None:
            if scope.expired_in == call.when:
                self._complete_expiry(guard, scope, call, report, item)
            elif call.when == "teardown" and scope.expired_in is None:
                self._check_overrun(scope, report)
        elif call.when == "call" and self._settings.slow:
            seconds, func_only = item.stash.get(DEADLINE, _NO_DEADLINE)
            if func_only and seconds:  # a func_only scope is the call phase alone
                self._note_if_slow(item.nodeid, seconds, call.duration, report)
        return report

    def _check_overrun(self, scope: ActiveScope, report: pytest.TestReport) -> None:
        """A test that ended after its deadline, before the watchdog's interrupt reached it
        (while its stacks were gathered), expired all the same."""
        elapsed = clock() - scope.armed_at
        if clock() > scope.deadline and self.guard is not None and not self.guard.paused:
            from pytest_expiry.report import expiry_record  # noqa: PLC0415 - rare path

            record = expiry_record(scope.nodeid, "teardown", scope.seconds, elapsed, None)
            record.update(deadline_source(scope.owner, scope.seconds, self._settings))
            from pytest_expiry.records import add_record  # noqa: PLC0415

            report.outcome = "failed"
            report.longrepr = (
                f"pytest_expiry.Expired: ended after {elapsed:.2f} s, "
                f"{clock() - scope.deadline:.3f} s past its deadline "
                f"(deadline {round(scope.seconds, 3):g} s)"
            )
            add_record(report, record)
            report.user_properties.append(("expiry", f"ended after its deadline ({elapsed:.2f} s)"))
        elif self._settings.slow:
            self._note_if_slow(scope.nodeid, scope.seconds, elapsed, report)

    def _account(self, guard: Guard, scope: ActiveScope, phase: str) -> dict[str, Any]:
        """Merge the watchdog's account of the expiry into one record (the watchdog was
        answered, and what is left of the test re-armed, before the report was made)."""
        event = guard.await_event(scope, self._settings.grace + _EVENT_MARGIN)
        from pytest_expiry.report import expiry_record  # noqa: PLC0415 - rare path

        record = expiry_record(scope.nodeid, phase, scope.seconds, scope.expired_after, event)
        return {**record, **deadline_source(scope.owner, scope.seconds, self._settings)}

    def _complete_expiry(
        self,
        guard: Guard,
        scope: ActiveScope,
        call: pytest.CallInfo[None],
        report: pytest.TestReport,
        item: pytest.Item,
    ) -> None:
        from pytest_expiry.records import attach, where_it_hung  # noqa: PLC0415

        record = {**self._account(guard, scope, call.when), "attempt": item.stash.get(_ATTEMPT, 1)}
        record["hung_at"] = where_it_hung(call.excinfo)
        worker_id = getattr(self._config, "workerinput", {}).get("workerid")
        if worker_id:
            name_xdist_worker(record, worker_id)
        expired = find_expiry(call.excinfo.value) if call.excinfo is not None else None
        if expired is not None and expired.pending_tasks:
            record["tasks"] = expired.pending_tasks
        if call.when == "call" and item.stash.get(DEADLINE, _NO_DEADLINE)[1]:
            guard.release()  # a func_only scope covers the call alone
        else:
            # what is left of the test starts now, with a fresh deadline: an interrupt for the
            # earlier one that arrives late (the report took long) is then seen as stale
            guard.rearm(scope.seconds)
        if expired is None:
            report.outcome = "failed"
            report.longrepr = (
                f"expired in {call.when} after {record['elapsed']:.2f} s "
                f"(deadline {round(scope.seconds, 3):g} s), and the test swallowed the "
                "Expired exception"
            )
        attach(report, record)
        item.user_properties.append(report.user_properties[-1])  # JUnit reads the item's
        item.ihook.pytest_expiry_expired(item=item, event=record)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        """A module that hangs at import becomes a collection error with the stacks."""
        seconds = self._settings.collect
        if not seconds or not isinstance(collector, pytest.Module) or self.unavailable:
            return (yield)
        guard = self._live_guard()
        if guard is None:
            return (yield)
        scope = guard.arm(collector.nodeid, seconds, answer_on_expiry=True)
        guard.phase = "collect"
        try:
            report = yield
        finally:
            guard.phase = None
            if scope.expired_in is None:
                guard.release()
        if scope.expired_in is not None:
            from pytest_expiry.records import attach  # noqa: PLC0415

            record = self._account(guard, scope, "collect")
            guard.release()
            attach(report, record)
            self._hung_modules += 1
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """A module that hung at import is reported, but does not stop the other modules'
        tests from running (other collection errors keep pytest's rule)."""
        option = session.config.option
        if not self._hung_modules or session.testsfailed != self._hung_modules:
            return (yield)
        previous, option.continue_on_collection_errors = option.continue_on_collection_errors, True
        try:
            return (yield)
        finally:
            option.continue_on_collection_errors = previous

    def _note_if_slow(
        self, nodeid: str, seconds: float, elapsed: float, report: pytest.TestReport
    ) -> None:
        if elapsed >= self._settings.slow * seconds and not getattr(report, "expiry", None):
            record = {
                "event": "slow", "nodeid": nodeid, "phase": report.when,
                "deadline": seconds, "elapsed": round(elapsed, 4),
            }  # fmt: skip
            from pytest_expiry.records import add_record  # noqa: PLC0415

            add_record(report, record)

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
            from pytest_expiry.exitguard import bound_exit  # noqa: PLC0415

            # an xdist worker's exit, bounded as the controller's is (xdist waits 10 s)
            bound_exit(self._settings.exit, int(workeroutput.get("exitstatus", 0)))


class _FuncOnlyScopes:
    """Scopes around the call phase alone, for items with ``func_only``; registered only
    when a collected item needs it, so other sessions do not pay for the hook."""

    def __init__(self, runner: ExpiryRunner) -> None:
        self._runner = runner

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        guard, seconds = self._runner.guard_for(item)
        if guard is None or not item.stash.get(DEADLINE, _NO_DEADLINE)[1]:
            return (yield)
        guard.arm(item.nodeid, seconds, owner=item)
        try:
            return (yield)
        finally:
            if guard.scope is not None and guard.scope.expired_in is None:
                guard.release()
