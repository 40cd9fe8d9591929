"""The session's owner of the watchdog and of the reports (plain pytest, or the xdist
controller): launches the watchdog on demand, stops it at the end, and gathers every
expiry into the terminal summary and the JSON report."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_expiry._compat import capture_disabled, end_progress_line
from pytest_expiry.exit import bound_exit
from pytest_expiry.report.log import ExpiryLog
from pytest_expiry.settings import Settings
from pytest_expiry.signals import ExpirySignals
from pytest_expiry.watchdog.launch import WatchdogProcess

__all__ = ["ExpirySession"]

_SLOW_LINES = "expiry-slow-lines"


class ExpirySession:
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
        self._slow_lines: list[str] = []
        self.exit_status = 0

    @property
    def settings(self) -> Settings:
        return self._settings

    def watchdog_address(self, fresh: bool = False) -> tuple[str, ExpirySignals]:
        """Start the watchdog if it is not running (or, ``fresh``, a new one in place of
        one found dead or stopped); return its directory and signals."""
        if fresh and self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.stop()
            self.watchdog = None
        if self.watchdog is None:
            # what the watchdog says (a failure of its own) goes to the real terminal
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
        details.append(f"native frames: {_native_unwinder()}")
        if not s.debugger_pause:
            details.append("not paused in a debugger")
        notes = [f"expiry: {note}" for note in s.header_notes]
        return [f"expiry: {deadline} ({', '.join(details)})", *notes]

    def on_report(self, report: pytest.TestReport) -> None:
        """Keep the records ``report`` carries (called by :class:`~pytest_expiry.pertest.PerTest`
        after the parts that add them)."""
        records = getattr(report, "expiry", None)
        if not records:
            return
        self.log.add_report(report)
        from pytest_expiry.report.terminal import slow_line  # noqa: PLC0415 - rare path

        lines = [slow_line(r) for r in records if r["event"] == "slow"]
        if lines:
            self._slow_lines.extend(lines)
            manager = self._config.pluginmanager
            if not manager.has_plugin(_SLOW_LINES):  # the first SLOW test of the session
                manager.register(_SlowLines(self), _SLOW_LINES)

    def write_slow_lines(self) -> None:
        """SLOW lines go out once the test has ended (so never for a test that expired), each
        on its own line between pytest's progress lines."""
        if not self._slow_lines:
            return
        reporter: Any = self._config.pluginmanager.get_plugin("terminalreporter")
        lines, self._slow_lines = self._slow_lines, []
        if reporter is None:
            return
        end_progress_line(reporter)
        for line in lines:
            reporter.write_line(line, yellow=True)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if getattr(report, "expiry", None):
            self.log.add_report(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_expiry.report.terminal import summary_lines  # noqa: PLC0415 - once

        lines = summary_lines(self.log.records)
        if self._settings.conflict and terminalreporter.verbosity < 0:  # -q: no header
            lines.append(f"WARNING {self._settings.conflict}")
        if lines:
            terminalreporter.section("expiry")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_sessionfinish(self, exitstatus: int) -> None:
        self.exit_status = int(exitstatus)
        if self._settings.report:
            from pytest_expiry.report.jsonfile import write_json  # noqa: PLC0415

            write_json(self._settings.report, self.log.records, int(exitstatus))

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self._settings.exit:
            bound_exit(self._settings.exit, self.exit_status)


class _SlowLines:
    """The hook that writes SLOW lines, registered once a test was slow (so that a session
    without SLOW tests does not pay for a hook call at the end of each test)."""

    def __init__(self, session: ExpirySession) -> None:
        self._session = session

    @pytest.hookimpl(trylast=True)  # after the terminal reporter has ended the test's progress
    def pytest_runtest_logfinish(self) -> None:
        self._session.write_slow_lines()


def _native_unwinder() -> str:
    import os  # noqa: PLC0415

    from pytest_expiry.stacks.native import find_native_unwinder  # noqa: PLC0415

    found = find_native_unwinder()
    return os.path.basename(found) if found else "none (install pytest-expiry[native])"


def _child_stacks(settings: Settings) -> str:
    mode = getattr(settings, "child_stacks", "auto")
    if mode != "auto":
        return "start-up hook" if mode == "hook" else "off"
    from pytest_expiry.stacks.unwinder import find_unwinder  # noqa: PLC0415

    return "py-spy" if find_unwinder() else "none (install pytest-expiry[native] for py-spy)"
