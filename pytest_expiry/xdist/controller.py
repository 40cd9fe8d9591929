"""pytest-xdist: one watchdog for the controller and every worker, and hard kills that
become expiry failures instead of "worker crashed".

When a worker's test cannot be interrupted, the watchdog kills the worker and its whole
process tree (so no forked child keeps the worker's execnet pipes open and the controller
sees the worker die). xdist then reports the test as crashed; :meth:`pytest_handlecrashitem`
rewrites that report from the watchdog's event: an ``Expired`` failure (JUnit ``<failure>``)
with the stacks and the real elapsed time. With ``--dist loadscope/loadfile`` the rest of the
test's group goes back to the queue; the test itself is marked done so that it is not run
again on the replacement worker.

A worker on another host (:mod:`pytest_expiry.xdist.hosts`) runs its own watchdog; the account of
its hard kill is read on that host (:func:`pytest_expiry.xdist.placement.collect_on_host`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry._compat import end_progress_line, mark_done_in_xdist_queue
from pytest_expiry.xdist import WORKER_KEY
from pytest_expiry.xdist.placement import Placement, collect_on_host

if TYPE_CHECKING:
    from pytest_expiry.session import ExpirySession

__all__ = ["WORKER_KEY", "XdistBridge", "isolate_with_one_worker"]

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

    def __init__(self, controller: ExpirySession) -> None:
        self._controller = controller
        self._nonce: str | None = None
        self._placement = Placement()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self) -> None:
        """Start the watchdog before xdist starts the workers: its own start-up then runs
        while the controller's does, not while the workers compete for the CPUs."""
        self._controller.watchdog_address()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """A worker whose tests left busy non-daemon threads cannot exit until they end:
        say so, with their stacks and the tests that left them (from its last message)."""
        from pytest_expiry.leaks.plugin import EXIT_BLOCKERS_KEY  # noqa: PLC0415

        blockers = getattr(node, "workeroutput", {}).get(EXIT_BLOCKERS_KEY)
        if blockers:
            self._controller.log.add_exit_blockers(node.gateway.id, blockers)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Each worker gets the controller's card: where its watchdog is, and what a worker
        that cannot reach it needs to run its own (:mod:`pytest_expiry.xdist.hosts`)."""
        from pytest_expiry.xdist.hosts import controller_card  # noqa: PLC0415

        directory, signals = self._controller.watchdog_address()
        deadline, budget = self._controller.session_deadline, self._controller.settings.session
        card = controller_card(directory, signals.encode(), deadline, budget)
        self._nonce = card["nonce"]
        node.workerinput[WORKER_KEY] = card

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self, specs: list[Any]) -> None:
        self._placement.expect(len(specs))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self, node: Any) -> None:
        """Once every worker is up, say which of them run a watchdog of their own (once,
        and only if one does)."""
        from pytest_expiry.xdist.hosts import shares  # noqa: PLC0415

        directory, _signals = self._controller.watchdog_address()
        worker = node.gateway.id
        line = self._placement.add(worker, node.gateway.spec, shares(directory, worker))
        reporter: Any = node.config.pluginmanager.get_plugin("terminalreporter")
        if line and reporter is not None:
            end_progress_line(reporter)
            reporter.write_line(line)

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

    def _own_watchdog_event(self, nodeid: str, node: Any) -> dict[str, Any] | None:
        """The account of a worker that ran its own watchdog: read on this host, or, for a
        worker that did not share this host's watchdog, on its own host through execnet."""
        from pytest_expiry.xdist import accounts  # noqa: PLC0415
        from pytest_expiry.xdist.hosts import shares  # noqa: PLC0415

        worker = getattr(getattr(node, "gateway", None), "id", None)
        if worker is None or self._nonce is None:
            return None
        prefix = accounts.prefix(self._nonce, worker)
        directory, _signals = self._controller.watchdog_address()
        if shares(directory, worker):
            return accounts.collect(prefix, nodeid, _EVENT_WAIT)
        return collect_on_host(node.gateway.spec, prefix, nodeid, _EVENT_WAIT)

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        node = getattr(report, "node", None)
        event = self._hard_kill_event(crashitem) or self._own_watchdog_event(crashitem, node)
        if event is None:
            return  # a crash of its own: xdist's report stands
        from pytest_expiry.labels import name_xdist_worker  # noqa: PLC0415
        from pytest_expiry.record import hard_killed  # noqa: PLC0415
        from pytest_expiry.report.carry import add_record  # noqa: PLC0415
        from pytest_expiry.report.terminal import describe_expiry, overrun_text  # noqa: PLC0415

        record = hard_killed(event)
        worker = getattr(node, "gateway", None)
        name = getattr(worker, "id", "?")
        name_xdist_worker(record, name)
        report.longrepr = (
            f"pytest_expiry.Expired: still running {overrun_text(record)}, so worker {name} "
            f"was killed\n\n" + describe_expiry(record)
        )
        report.when = "call"  # a failure of the test, not an error of xdist's
        report.duration = record["elapsed"]
        add_record(report, record)
        mark_done_in_xdist_queue(sched, crashitem)
