"""pytest-xdist: one watchdog for the controller and every worker, and hard kills that
become expiry failures instead of "worker crashed".

When a worker's test cannot be interrupted, the watchdog kills the worker and its whole
process tree (so no forked child keeps the worker's execnet pipes open and the controller
sees the worker die). xdist then reports the test as crashed; :meth:`pytest_handlecrashitem`
rewrites that report from the watchdog's event: an ``Expired`` failure (JUnit ``<failure>``)
with the stacks and the real elapsed time. With ``--dist loadscope/loadfile`` the rest of the
test's group goes back to the queue; the test itself is marked done so that it is not run
again on the replacement worker.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry._compat import mark_done_in_xdist_queue

if TYPE_CHECKING:  # workers read WORKER_KEY only: they need none of the controller's side
    from pytest_expiry.controller import ExpiryController

__all__ = ["WORKER_KEY", "XdistBridge", "isolate_with_one_worker"]

WORKER_KEY = "expiry_watchdog"
_EVENT_WAIT = 3.0


def isolate_with_one_worker(config: pytest.Config) -> None:
    """``--expiry-isolate``: run the tests in one xdist worker, so that a test that must be
    killed takes only the worker with it."""
    if not config.pluginmanager.hasplugin("xdist"):
        raise pytest.UsageError(
            "--expiry-isolate runs tests in a pytest-xdist worker, but pytest-xdist is not "
            "installed: pip install 'pytest-expiry[xdist]' (or drop --expiry-isolate)"
        )
    if not getattr(config.option, "numprocesses", None):
        config.option.numprocesses = 1


class XdistBridge:
    """Controller-side hooks: tell workers where the watchdog is; explain their deaths."""

    def __init__(self, controller: ExpiryController) -> None:
        self._controller = controller

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self) -> None:
        """Start the watchdog before xdist starts the workers: its own start-up then runs
        while the controller's does, not while the workers compete for the CPUs."""
        self._controller.watchdog_address()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """A worker whose tests left busy non-daemon threads cannot exit until they end:
        say so, with their stacks and the tests that left them (from its last message)."""
        from pytest_expiry.leakcheck import EXIT_BLOCKERS_KEY  # noqa: PLC0415

        blockers = getattr(node, "workeroutput", {}).get(EXIT_BLOCKERS_KEY)
        if blockers:
            self._controller.log.add_exit_blockers(node.gateway.id, blockers)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        directory, signals = self._controller.watchdog_address()
        deadline = self._controller.session_deadline
        node.workerinput[WORKER_KEY] = (directory, signals.encode(), deadline)

    def _hard_kill_event(self, nodeid: str) -> dict[str, Any] | None:
        watchdog = self._controller.watchdog
        end = time.monotonic() + _EVENT_WAIT
        while watchdog is not None and time.monotonic() < end:
            events = [e for e in watchdog.events() if e.get("nodeid") == nodeid]
            for event in events:
                if event.get("hard_killed"):
                    return event
            if not any(e["event"] == "killing" for e in events):
                return None  # not killed by the watchdog: a crash of its own, known at once
            watchdog.await_event(end - time.monotonic())  # the account, as soon as it is written
        return None

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        event = self._hard_kill_event(crashitem)
        if event is None:
            return  # a crash of its own: xdist's report stands
        from pytest_expiry.labels import name_xdist_worker  # noqa: PLC0415
        from pytest_expiry.records import add_record  # noqa: PLC0415
        from pytest_expiry.report import (  # noqa: PLC0415
            deadline_text,
            describe_expiry,
            hard_kill_record,
        )

        record = hard_kill_record(event)
        worker = getattr(getattr(report, "node", None), "gateway", None)
        name = getattr(worker, "id", "?")
        name_xdist_worker(record, name)
        report.longrepr = (
            f"pytest_expiry.Expired: still running after {record['elapsed']:.2f} s "
            f"({deadline_text(record)}), so worker {name} was killed\n\n" + describe_expiry(record)
        )
        report.when = "call"  # a failure of the test, not an error of xdist's
        report.duration = record["elapsed"]
        add_record(report, record)
        report.user_properties.append(("expiry", f"hard-killed after {record['elapsed']:.2f} s"))
        mark_done_in_xdist_queue(sched, crashitem)
