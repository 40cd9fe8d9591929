"""The pytest hooks of leak detection (``--expiry-leaks``), which stand on their own: they need
no deadline and no watchdog. The session's tag (:mod:`pytest_expiry.lineage`) is added to the
environment when the plugin is made and taken back, exactly, when it is closed. Each test's
start, and each of its reports, reach it through :class:`~pytest_expiry.pertest.PerTest`; after
each test's teardown, the processes it left running are reported (and, in ``kill``/``fail`` modes,
ended), and so are the busy non-daemon threads it left; see :mod:`pytest_expiry.leaks.processes` and
:mod:`pytest_expiry.leaks.threads`."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry import lineage
from pytest_expiry._compat import reports_logged_live
from pytest_expiry.leaks.processes import LeakWatch
from pytest_expiry.leaks.threads import ThreadWatch
from pytest_expiry.settings import Settings

if TYPE_CHECKING:
    from pytest_expiry.record import Record

__all__ = ["EXIT_BLOCKERS_KEY", "LeakCheck"]

EXIT_BLOCKERS_KEY = "expiry_exit_blockers"
_THREADS_TITLE = "threads left running after teardown"
_MARKS = "expiry-leak-marks"


class LeakCheck:
    """Registered in the process that runs tests when leak detection is on (from
    ``pytest_configure``); :meth:`close` must be called at ``pytest_unconfigure``."""

    def __init__(self, settings: Settings) -> None:
        self.token = lineage.new_token()
        lineage.join(self.token)
        self.leaks = LeakWatch(settings.leaks, settings.grace, self.token)
        self.threads = ThreadWatch()
        self._live: bool | None = None  # whether reports are logged as they are made
        self._pending: tuple[str, list[tuple[Record, str]]] | None = None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """On an xdist worker: the threads that will hold its exit go to the controller with
        the worker's last message (it sees nothing of the worker after that)."""
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is None:
            return
        from pytest_expiry.leaks.threads import exit_blockers  # noqa: PLC0415 - once

        blockers = exit_blockers()
        if blockers:
            workeroutput[EXIT_BLOCKERS_KEY] = blockers

    def begin(self, item: pytest.Item) -> None:
        """A test starts: what appears from now on may be its leak. (At the first test, where
        phases end is decided: as reports are logged, or as they are made where a plugin
        logs them only after the attempt.)"""
        self._pending = None  # the last test's teardown report was never logged
        if self._live is None:
            self._live = reports_logged_live(item.config.pluginmanager)
            if not self._live:
                item.config.pluginmanager.register(_PhaseMarks(self), _MARKS)
        self.leaks.begin()
        self.threads.begin()

    def end_phase(self, nodeid: str, phase: str) -> None:
        """Mark the end of ``phase``; after the teardown, look for what the test left
        running (the records wait for the teardown report: :meth:`on_report`)."""
        self.leaks.end_phase(phase)
        if phase != "teardown":
            return
        window = self.leaks.window()
        if window is None and not self.threads.watching:
            self._pending = None  # the common case: no pid was allocated, no pool was idle
            return
        found = []
        if window is not None:  # processes first: ending them may end threads that wait on them
            found.append((self.leaks.check(nodeid), "leaked processes"))
        found.append((self.threads.check(nodeid, self.leaks.mode, window), _THREADS_TITLE))
        records = [(record, title) for record, title in found if record is not None]
        self._pending = (nodeid, records) if records else None

    def on_report(self, report: pytest.TestReport) -> None:
        """Where each report is logged as it is made, its phase ends here; the teardown
        report of a test that leaked gets the records."""
        if report.when != "teardown":
            if self._live:
                self.leaks.end_phase(report.when)
            return
        if self._live:
            self.end_phase(report.nodeid, "teardown")
        if self._pending is not None:
            self.attach_records(report)

    def attach_records(self, report: pytest.TestReport) -> None:
        """Put the records of what the test left on its teardown ``report`` (once)."""
        pending = self._pending
        if pending is not None and report.nodeid == pending[0]:
            self._pending = None
            for record, title in pending[1]:
                _attach(report, record, title, self.leaks.mode)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        """Processes started while a wider-scoped fixture is set up belong to that fixture,
        not to the test during whose setup it happened."""
        __tracebackhide__ = True  # a failing fixture's traceback shows no frame of ours
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


class _PhaseMarks:
    """Where reports are logged after the attempt (pytest-rerunfailures), each phase's end
    is marked as its report is made instead, and the teardown report gets its records then:
    a test failed for a leak (``fail`` mode) is failed where the rerun is decided."""

    def __init__(self, check: LeakCheck) -> None:
        self._check = check

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        self._check.end_phase(item.nodeid, call.when)
        report = yield
        if call.when == "teardown":
            self._check.attach_records(report)
        return report


def _attach(report: pytest.TestReport, record: Record, title: str, mode: str) -> None:
    """In ``fail`` mode a passed test fails with the record's text; otherwise the text is a
    section of the report (``report.sections``, beside its captured output), never part of a
    teardown's own failure (its traceback, JUnit's ``<error>``)."""
    from pytest_expiry.report import carry, terminal  # noqa: PLC0415 - rare path

    if mode == "fail" and report.passed:
        report.outcome = "failed"
        report.longrepr = terminal.describe(record)
    else:
        report.sections.append((f"expiry: {title}", terminal.describe(record)))
    carry.add_record(report, record)
