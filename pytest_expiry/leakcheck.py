"""The pytest hooks of leak detection (``--expiry-leaks``), which stand on their own: they need
no deadline and no watchdog. The session's tag (:mod:`pytest_expiry.lineage`) is added to the
environment when the plugin is made and taken back, exactly, when it is closed; after each
test's teardown, the processes it left running are reported (and, in ``kill``/``fail`` modes,
ended); see :mod:`pytest_expiry.leaks`."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_expiry import lineage
from pytest_expiry.leaks import LeakWatch
from pytest_expiry.settings import Settings

__all__ = ["LeakCheck"]


class LeakCheck:
    """Registered in the process that runs tests when leak detection is on (from
    ``pytest_configure``); :meth:`close` must be called at ``pytest_unconfigure``."""

    def __init__(self, settings: Settings) -> None:
        self.token = lineage.new_token()
        lineage.join(self.token)
        self.leaks = LeakWatch(settings.leaks, settings.grace, self.token)

    def pytest_runtest_logstart(self) -> None:
        self.leaks.begin()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        changed = self.leaks.end_phase(call.when)
        report = yield
        if changed and call.when == "teardown":
            self._check(item, report)
        return report

    def _check(self, item: pytest.Item, report: pytest.TestReport) -> None:
        record = self.leaks.check(item.nodeid)
        if record is None:
            return
        from pytest_expiry.report import describe_leak  # noqa: PLC0415 - rare path

        text = describe_leak(record)
        if self.leaks.mode == "fail" and report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("expiry: leaked processes", text))
        report.expiry = [*(getattr(report, "expiry", None) or []), record]  # type: ignore[attr-defined]
        report.user_properties.append(("expiry_leaked", " ".join(map(str, record["pids"]))))

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any) -> Generator[None, object, object]:
        """Processes started while a wider-scoped fixture is set up belong to that fixture,
        not to the test during whose setup it happened."""
        if fixturedef.scope == "function":
            return (yield)
        before = self.leaks.mark()
        try:
            return (yield)
        finally:
            self.leaks.owned_by_fixture(before, self.leaks.mark())

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
