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


class LeakCheck:
    """Registered in the process that runs tests when leak detection is on (from
    ``pytest_configure``); :meth:`close` must be called at ``pytest_unconfigure``."""

    def __init__(self, settings: Settings) -> None:
        self.token = lineage.new_token()
        lineage.join(self.token)
        self.leaks = LeakWatch(settings.leaks, settings.grace, self.token)
        self.threads = ThreadWatch()

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
        self.leaks.begin()
        self.threads.begin()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        changed = self.leaks.end_phase(call.when)
        report = yield
        if call.when == "teardown":
            if changed:
                self._check(item, report)
            self._check_threads(item, report)
        return report

    def _check(self, item: pytest.Item, report: pytest.TestReport) -> None:
        record = self.leaks.check(item.nodeid)
        if record is not None:
            self._attach(report, record, "leaked processes")

    def _check_threads(self, item: pytest.Item, report: pytest.TestReport) -> None:
        record = self.threads.check(item.nodeid, self.leaks.mode)
        if record is not None:
            self._attach(report, record, "threads left running after teardown")

    def _attach(self, report: pytest.TestReport, record: Record, title: str) -> None:
        """In ``fail`` mode a passed test fails with the record's text; otherwise the text
        is a section of the report (``report.sections``, beside its captured output), never
        part of a teardown's own failure (its traceback, JUnit's ``<error>``)."""
        from pytest_expiry.report import carry, terminal  # noqa: PLC0415 - rare path

        if self.leaks.mode == "fail" and report.passed:
            report.outcome = "failed"
            report.longrepr = terminal.describe(record)
        else:
            report.sections.append((f"expiry: {title}", terminal.describe(record)))
        carry.add_record(report, record)

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
