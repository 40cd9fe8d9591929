"""A scope around each module's import (``--expiry-collect``): a module that hangs at import
becomes a collection error with the stacks, and the other modules' tests still run."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_expiry._compat import collection_errors_tolerated

if TYPE_CHECKING:
    from pytest_expiry.scoping import ScopeHooks

__all__ = ["ImportScopes"]


class ImportScopes:
    """Registered beside :class:`~pytest_expiry.scoping.ScopeHooks`, whose watchdog
    connection it shares, when imports have a deadline."""

    def __init__(self, hooks: ScopeHooks, seconds: float) -> None:
        self._hooks = hooks
        self._seconds = seconds
        self._hung_modules = 0

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        if not isinstance(collector, pytest.Module) or self._hooks.unavailable:
            return (yield)
        guard = self._hooks.live_guard()
        if guard is None:
            return (yield)
        scope = guard.arm(collector.nodeid, self._seconds, answer_on_expiry=True)
        try:
            report: pytest.CollectReport = yield from guard.run_phase("collect")
        finally:
            if scope.expired_in is None:
                guard.release()
        if scope.expired_in is not None:
            from pytest_expiry.outcome import account  # noqa: PLC0415 - rare path
            from pytest_expiry.report.carry import attach  # noqa: PLC0415

            record = account(guard, scope, "collect", self._hooks.settings)
            guard.release()
            attach(report, record)
            self._hung_modules += 1
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """A module that hung at import is reported, but does not stop the other modules'
        tests from running (other collection errors keep pytest's rule)."""
        if not self._hung_modules or session.testsfailed != self._hung_modules:
            return (yield)
        with collection_errors_tolerated(session.config):
            return (yield)
