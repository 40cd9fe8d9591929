"""The pytest hooks of leak detection (``--expiry-leaks``), which stand on their own: they need
no deadline and no watchdog. The session's tag (:mod:`pytest_expiry.lineage`) is added to the
environment when the plugin is made and taken back, exactly, when it is closed; after each
test's teardown, the processes it left running are reported (and, in ``kill``/``fail`` modes,
ended), and so are the busy non-daemon threads it left; see :mod:`pytest_expiry.leaks.processes` and
:mod:`pytest_expiry.leaks.threads`."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_expiry import lineage
from pytest_expiry.leaks.processes import LeakWatch
from pytest_expiry.leaks.threads import ThreadWatch
from pytest_expiry.record import Record
from pytest_expiry.settings import Settings

__all__ = ["EXIT_BLOCKERS_KEY", "LeakCheck"]

EXIT_BLOCKERS_KEY = "expiry_exit_blockers"
_THREADS_TITLE = "threads left running after teardown"
_RECORDS = "expiry-leak-records"


class LeakCheck:
    """Registered in the process that runs tests when leak detection is on (from
    ``pytest_configure``); :meth:`close` must be called at ``pytest_unconfigure``."""

    def __init__(self, settings: Settings) -> None:
        self.token = lineage.new_token()
        lineage.join(self.token)
        self.leaks = LeakWatch(settings.leaks, settings.grace, self.token)
        self.threads = ThreadWatch()
        self._unlogged: _LeakRecords | None = None

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

    def pytest_runtest_logstart(self) -> None:
        if self._unlogged is not None:  # the last test's teardown report was never logged
            self._unlogged.done()
            self._unlogged = None
        self.leaks.begin()
        self.threads.begin()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> None:
        """Marks the end of each phase; after the teardown, looks for what the test left
        running. (A plain hook, called before the report is made: the report of a test that
        leaked gets the record when it is logged, see :class:`_LeakRecords`.)"""
        changed = self.leaks.end_phase(call.when)
        if call.when != "teardown":
            return
        found = []
        if changed:
            found.append((self.leaks.check(item.nodeid), "leaked processes"))
        found.append((self.threads.check(item.nodeid, self.leaks.mode), _THREADS_TITLE))
        records = [(record, title) for record, title in found if record is not None]
        if records:
            self._unlogged = _LeakRecords(item.config, item.nodeid, self.leaks.mode, records)
            item.config.pluginmanager.register(self._unlogged, _RECORDS)

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


class _LeakRecords:
    """Registered for one test's teardown report, when the test leaked: attaches the records
    as the report is logged, and unregisters itself."""

    def __init__(
        self, config: pytest.Config, nodeid: str, mode: str, records: list[tuple[Record, str]]
    ) -> None:
        self._config = config
        self._nodeid = nodeid
        self._mode = mode
        self._records = records

    def done(self) -> None:
        manager = self._config.pluginmanager
        if manager.is_registered(self):
            manager.unregister(self)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid != self._nodeid or report.when != "teardown":
            return
        self.done()
        for record, title in self._records:
            _attach(report, record, title, self._mode)


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
