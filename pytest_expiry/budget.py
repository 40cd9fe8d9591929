"""The session budget (``--expiry-session``): a deadline for the whole run.

Each test's deadline is capped by what is left of the budget, so the test running when it
runs out expires like any other. Every test after that is not run: it gets a skip report
("not run: ...") through the ordinary hooks, so the terminal, JUnit and the JSON report all
list it, under xdist too. Registered only when a budget is set.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_expiry.clock import clock

__all__ = ["SessionBudget"]


class SessionBudget:
    def __init__(self, seconds: float, deadline: float) -> None:
        self.seconds = seconds
        self.deadline = deadline

    def left(self) -> float:
        return self.deadline - clock()

    def cap(self, seconds: float) -> float:
        """A test's deadline, shortened to what is left of the budget (0 seconds: none)."""
        left = max(self.left(), 1e-3)
        return min(seconds, left) if seconds else left

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> bool | None:
        if self.left() > 0:
            return None
        reason = f"not run: the session's expiry budget of {self.seconds:g} s was exceeded"
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        call: pytest.CallInfo[Any] = pytest.CallInfo.from_call(lambda: pytest.skip(reason), "setup")
        report = item.ihook.pytest_runtest_makereport(item=item, call=call)
        path, line, _ = item.location
        report.longrepr = (path, (line or 0) + 1, f"Skipped: {reason}")
        from pytest_expiry.record import not_run  # noqa: PLC0415 - rare path
        from pytest_expiry.report.carry import add_record  # noqa: PLC0415

        add_record(report, not_run(item.nodeid))
        item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True
