"""The pytest hooks of leak detection (``--expiry-leaks``), which stand on their own: they need
no deadline and no watchdog. The session's tag (:mod:`pytest_expiry.lineage`) is added to the
environment when the plugin is made and taken back, exactly, when it is closed; after each
test's teardown, the processes it left running are reported (and, in ``kill``/``fail`` modes,
ended), and so are the busy non-daemon threads it left; see :mod:`pytest_expiry.leaks` and
:mod:`pytest_expiry.threadleaks`.

A test's window opens when its setup begins and closes when its teardown ends. The per-test
hooks (:class:`TestLeakHooks`) are a plugin of their own, ``PER_TEST``: the runner, which has
hooks at the same points, takes their work over and unregisters them (one hook call fewer in
each phase, the most a session pays for leak detection)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_expiry import lineage
from pytest_expiry.leaks import LeakWatch
from pytest_expiry.settings import Settings
from pytest_expiry.threadleaks import ThreadWatch

__all__ = ["EXIT_BLOCKERS_KEY", "PER_TEST", "LeakCheck", "TestLeakHooks", "adopt_per_test_hooks"]

EXIT_BLOCKERS_KEY = "expiry_exit_blockers"
PER_TEST = "expiry-leaks-per-test"
"""The name under which :attr:`LeakCheck.per_test` is registered."""


class LeakCheck:
    """Registered in the process that runs tests when leak detection is on (from
    ``pytest_configure``); :meth:`close` must be called at ``pytest_unconfigure``."""

    def __init__(self, settings: Settings) -> None:
        self.token = lineage.new_token()
        lineage.join(self.token)
        self.leaks = LeakWatch(settings.leaks, settings.grace, self.token)
        self.threads = ThreadWatch()
        self.per_test = TestLeakHooks(self)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """On an xdist worker: the threads that will hold its exit go to the controller with
        the worker's last message (it sees nothing of the worker after that)."""
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is None:
            return
        from pytest_expiry.threadleaks import exit_blockers  # noqa: PLC0415 - once

        blockers = exit_blockers()
        if blockers:
            workeroutput[EXIT_BLOCKERS_KEY] = blockers

    def begin(self) -> None:
        """A test's setup begins: what is created from now on may be its leak."""
        self.leaks.begin()
        self.threads.begin()

    def end_phase(self, when: str) -> bool:
        """Phase ``when`` ended (before its report is made): whether any pid was allocated
        since :meth:`begin`."""
        return self.leaks.end_phase(when)

    def after_teardown(self, item: pytest.Item, report: pytest.TestReport, changed: bool) -> None:
        """The teardown's ``report`` is made: report on it what the test left running
        (``changed``: :meth:`end_phase`'s answer for the teardown)."""
        if changed:
            self._check(item, report)
        self._check_threads(item, report)

    def _check(self, item: pytest.Item, report: pytest.TestReport) -> None:
        record = self.leaks.check(item.nodeid)
        if record is None:
            return
        from pytest_expiry.report import describe_leak  # noqa: PLC0415 - rare path

        self._attach(report, record, describe_leak(record), "leaked processes")
        report.user_properties.append(("expiry_leaked", " ".join(map(str, record["pids"]))))

    def _check_threads(self, item: pytest.Item, report: pytest.TestReport) -> None:
        record = self.threads.check(item.nodeid, self.leaks.mode)
        if record is None:
            return
        from pytest_expiry.threadleaks import describe_threads  # noqa: PLC0415 - rare path

        self._attach(
            report, record, describe_threads(record), "threads left running after teardown"
        )
        names = " ".join(repr(thread["name"]) for thread in record["threads"])
        report.user_properties.append(("expiry_leaked_threads", names))

    def _attach(
        self, report: pytest.TestReport, record: dict[str, Any], text: str, title: str
    ) -> None:
        if self.leaks.mode == "fail" and report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append((f"expiry: {title}", text))
        from pytest_expiry.records import add_record  # noqa: PLC0415 - rare path

        add_record(report, record)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        """Processes started while a wider-scoped fixture is set up belong to that fixture,
        not to the test during whose setup it happened."""
        if fixturedef.scope == "function":
            return (yield)
        before, threads = self.leaks.mark(), self.threads.snapshot()
        try:
            return (yield)
        finally:
            self.leaks.owned_by_fixture(before, self.leaks.mark())
            self.threads.owned_by_fixture(threads)

    def pytest_keyboard_interrupt(self) -> None:
        self._interrupted = True

    def close(self) -> None:
        """End the session's leftovers (``kill``/``fail`` modes, or after Ctrl-C), put the
        environment back."""
        try:
            self.leaks.end_session(getattr(self, "_interrupted", False))
        finally:
            self.leaks.close()
            lineage.leave(self.token)


class TestLeakHooks:
    """The per-test hooks of a :class:`LeakCheck`, for a process without a runner (an xdist
    worker whose controller has no watchdog); registered as ``PER_TEST``."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, check: LeakCheck) -> None:
        self.check = check

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self) -> None:
        self.check.begin()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        changed = self.check.end_phase(call.when)
        report = yield
        if call.when == "teardown":
            self.check.after_teardown(item, report, changed)
        return report


def adopt_per_test_hooks(manager: pytest.PytestPluginManager) -> LeakCheck | None:
    """For the runner: take over the per-test hooks of leak detection, and return the
    :class:`LeakCheck` whose :meth:`~LeakCheck.begin`, :meth:`~LeakCheck.end_phase` and
    :meth:`~LeakCheck.after_teardown` the runner then calls at the same points (its
    makereport wrapper is registered just outside theirs). None, and nothing taken over,
    when leak detection is off or another makereport wrapper of the plugin's sits between
    the two (the learned deadlines' duration probe)."""
    hooks = manager.get_plugin(PER_TEST)
    if not isinstance(hooks, TestLeakHooks) or manager.has_plugin("expiry-durations"):
        return None
    manager.unregister(hooks)
    return hooks.check
