"""The session's owner of the watchdog and of the reports (plain pytest, or the xdist
controller): launches the watchdog on demand, stops it at the end, and gathers every
expiry into the terminal summary and the JSON report."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_expiry._compat import capture_disabled
from pytest_expiry.exitguard import bound_exit
from pytest_expiry.launcher import WatchdogProcess
from pytest_expiry.report import ExpiryLog
from pytest_expiry.settings import Settings
from pytest_expiry.signals import ExpirySignals

__all__ = ["ExpiryController"]


class ExpiryController:
    def __init__(
        self,
        config: pytest.Config,
        settings: Settings,
        signals: ExpirySignals,
        session_deadline: float,
    ) -> None:
        self.session_deadline = session_deadline
        self._config = config
        self._settings = settings
        self.signals = signals
        self.watchdog: WatchdogProcess | None = None
        self.log = ExpiryLog()
        self.exit_status = 0

    def watchdog_address(self, fresh: bool = False) -> tuple[str, ExpirySignals]:
        """Start the watchdog if it is not running (or, ``fresh``, a new one in place of
        one found dead or stopped); return its directory and signals."""
        if fresh and self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.stop()
            self.watchdog = None
        if self.watchdog is None:
            # the watchdog writes SLOW notices to the real terminal, not to a capture file
            with capture_disabled(self._config):
                self.watchdog = WatchdogProcess.launch(
                    self._settings.grace,
                    self.signals,
                    self._settings.report,
                    getattr(self._settings, "child_stacks", "auto"),
                )
        return self.watchdog.directory, self.signals

    def pytest_report_header(self) -> list[str]:
        s = self._settings
        deadline = f"{s.default:g} s per test" if s.default else "none by default (markers only)"
        details = [f"scale {s.scale:g}", f"grace {s.grace:g} s"]
        details.append(f"slow at {s.slow:.0%}" if s.slow else "no SLOW notices")
        if s.func_only:
            details.append("func_only")
        if s.session:
            details.append(f"session budget {s.session:g} s")
        if s.timeout_compat:
            details.append("pytest-timeout markers honoured")
        details.append(f"child stacks: {_child_stacks(s)}")
        if not s.debugger_pause:
            details.append("not paused in a debugger")
        notes = [f"expiry: {note}" for note in s.header_notes]
        return [f"expiry: {deadline} ({', '.join(details)})", *notes]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, "expiry", None):
            self.log.add_report(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if getattr(report, "expiry", None):
            self.log.add_report(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = self.log.summary_lines()
        if lines:
            terminalreporter.section("expiry")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.exit_status = int(exitstatus)
        if self._settings.report:
            self.log.write_json(self._settings.report, int(exitstatus))

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self._settings.exit:
            bound_exit(self._settings.exit, self.exit_status)


def _child_stacks(settings: Settings) -> str:
    mode = getattr(settings, "child_stacks", "auto")
    if mode != "auto":
        return "start-up hook" if mode == "hook" else "off"
    from pytest_expiry.unwinder import find_unwinder  # noqa: PLC0415

    return "py-spy" if find_unwinder() else "none (install pytest-expiry[native] for py-spy)"
