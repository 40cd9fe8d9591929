"""The per-test hooks: the only ones the plugin adds to every test's path.

pluggy's cost is per implementation it calls, so the parts that need each test's start, end
or reports (the scope, leak detection, the session's record of expiries) are not plugins of
their own here: :class:`PerTest` calls them. A passing test costs one wrapper around its
protocol and one call per report, whichever parts are on. In the order they run:

* at the start of the protocol: the scope is armed, then leak detection takes its marks;
* for each logged report: leak detection (its phase mark; after the teardown, what the test
  left); then, for a teardown report, one that did not pass or one that carries records,
  the scope (a teardown past the deadline, SLOW, an attempt in trouble) and the session,
  which keeps the records the report carries;
* at the end of the protocol: the scope is released.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Protocol

import pytest

__all__ = ["EndingPart", "Part", "PerTest", "ReportReader"]


class ReportReader(Protocol):
    def on_report(self, report: pytest.TestReport) -> None:
        """Called as ``report`` is logged, before pytest's own reporters see it: for leak
        detection every report; for the other parts a teardown report, a report that did
        not pass, or one that carries records (not a passing setup or call without any)."""


class Part(ReportReader, Protocol):
    def begin(self, item: pytest.Item) -> None:
        """``item``'s protocol starts."""


class EndingPart(Part, Protocol):
    def end(self, item: pytest.Item) -> None:
        """``item``'s protocol ended (also when it raised)."""


class PerTest:
    """Registered once per session (``expiry-per-test``); the parts are set before the first
    test and stay for the session."""

    def __init__(self) -> None:
        self.leaks: Part | None = None
        self.scopes: EndingPart | None = None
        self.session: ReportReader | None = None

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        scopes, leaks = self.scopes, self.leaks
        if scopes is not None:
            scopes.begin(item)
        try:
            if leaks is not None:
                leaks.begin(item)
            return (yield)
        finally:
            if scopes is not None:
                scopes.end(item)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.leaks is not None:
            self.leaks.on_report(report)
        if (
            report.outcome == "passed"
            and report.when != "teardown"
            and "expiry" not in vars(report)
        ):
            return  # most reports: a passing setup or call, of concern to leak detection alone
        if self.scopes is not None:
            self.scopes.on_report(report)
        if self.session is not None:
            self.session.on_report(report)
