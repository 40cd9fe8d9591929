"""An xdist worker's side: which watchdog guards its tests, and its session budget.

A worker that shares its controller's host (same boot, same ``/tmp``, same user:
:func:`pytest_expiry.xdist.hosts.join_shared`) uses the controller's watchdog. Any other one runs
a watchdog of its own on its host, with the same settings, started by its first test that
has a deadline; its hard kills are then collected by the controller from that host
(:mod:`pytest_expiry.xdist.accounts`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry.budget import SessionBudget
from pytest_expiry.clock import clock
from pytest_expiry.signals import ExpirySignals, parse_signals
from pytest_expiry.xdist.hosts import join_shared

if TYPE_CHECKING:
    from pytest_expiry.settings import Settings
    from pytest_expiry.watchdog.launch import WatchdogProcess

__all__ = ["WorkerWatchdog", "session_budget", "worker_watchdog"]


def worker_watchdog(
    config: pytest.Config, settings: Settings, card: dict[str, Any], worker: str
) -> tuple[WorkerWatchdog, SessionBudget | None] | None:
    """A worker's way to its watchdog and its session budget, given its controller's card
    (:func:`pytest_expiry.xdist.hosts.controller_card`); None, with a warning that reaches the
    controller, for a worker that does not run in its process's main thread (the interrupt
    is a signal, which only the main thread handles)."""
    if threading.current_thread() is not threading.main_thread():
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(
                f"pytest-expiry: xdist worker {worker} runs its tests outside its process's "
                "main thread (an execnet socket server with the 'thread' execmodel?), where no "
                "deadline can interrupt them: its tests run without deadlines"
            ),
            stacklevel=2,
        )
        return None
    shared = join_shared(card, worker)
    signals = parse_signals(card["signals"])
    own = (card["nonce"], worker)
    connect = WorkerWatchdog(card["directory"] if shared else None, signals, settings, own)
    return connect, session_budget(settings.session, card, shared)


def session_budget(seconds: float, card: dict[str, Any], shared: bool) -> SessionBudget | None:
    """The session budget (``--expiry-session``) on a worker: the controller's deadline on
    its host (one clock), else the seconds that were left when the controller sent the card
    (another host's clock means nothing here; the worker's start-up is then not counted)."""
    if not seconds:
        return None
    deadline = card["deadline"] if shared else clock() + card["remaining"]
    return SessionBudget(seconds, deadline)


class WorkerWatchdog:
    """A worker's way to its watchdog: the controller's (``directory``); or one of its own,
    started on first use when ``directory`` is None, or once the controller's is found dead
    or stopped. ``own`` (the controller's nonce, the worker id) names an own watchdog's
    directory where the controller looks for the account of a hard kill."""

    def __init__(
        self,
        directory: str | None,
        signals: ExpirySignals,
        settings: Settings,
        own: tuple[str, str],
    ) -> None:
        self._directory = directory
        self._signals = signals
        self._settings = settings
        self._own_name = own
        self._own: WatchdogProcess | None = None

    def __call__(self, fresh: bool) -> tuple[str, ExpirySignals]:
        if fresh or self._directory is None:
            from pytest_expiry.watchdog.launch import WatchdogProcess  # noqa: PLC0415

            if self._own is not None:
                self._own.kill()
            self.stop()
            self._own = WatchdogProcess.launch(
                self._settings.grace,
                self._signals,
                None,
                getattr(self._settings, "child_stacks", "auto"),
                worker_of=self._own_name,
            )
            self._directory = self._own.directory
        return self._directory, self._signals

    def stop(self) -> None:
        if self._own is not None:
            self._own.stop()
            self._own = None
