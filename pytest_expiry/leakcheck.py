"""The pytest hooks of leak detection (``--expiry-leaks``), which stand on their own: they need
no deadline and no watchdog. After each test's teardown, the processes it left running are
reported (and, in ``kill``/``fail`` modes, ended); see :mod:`pytest_expiry.leaks`."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from pytest_expiry.leaks import LeakWatch
from pytest_expiry.settings import Settings

__all__ = ["LeakCheck"]


class LeakCheck:
    """Registered in the process that runs tests when leak detection is on."""

    def __init__(self, settings: Settings) -> None:
        self.leaks = LeakWatch(settings.leaks, settings.grace)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when == "teardown" and self.leaks.changed():
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
        before = self.leaks.children()
        try:
            return (yield)
        finally:
            self.leaks.owned_by_fixture(self.leaks.children() - before)

    def close(self) -> None:
        self.leaks.end_session()
