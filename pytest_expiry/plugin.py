"""The pytest entry point: options, ini values, markers, and wiring the session together.

* :class:`~pytest_expiry.controller.ExpiryController` owns the watchdog and the reports (in
  plain pytest, or in the xdist controller);
* :class:`~pytest_expiry.runner.ExpiryRunner` arms a scope per test (in the process that runs
  tests: plain pytest, or each xdist worker, which reaches its controller's watchdog).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from pytest_expiry import hookspecs
from pytest_expiry.budget import SessionBudget
from pytest_expiry.controller import ExpiryController
from pytest_expiry.options import add_options
from pytest_expiry.runner import ExpiryRunner
from pytest_expiry.settings import Settings
from pytest_expiry.signals import ExpirySignals, default_signals, parse_signals
from pytest_expiry.timer.api import clock
from pytest_expiry.xdist_bridge import WORKER_KEY, XdistBridge, isolate_with_one_worker

_CONTROLLER = "expiry-controller"
_RUNNER = "expiry-runner"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _register_markers(config: pytest.Config, settings_compat: bool) -> None:
    config.addinivalue_line(
        "markers",
        "expires(seconds, *, func_only=False): deadline of this test in seconds (0 disables), "
        "overriding --expiry; func_only=True leaves fixtures out of it.",
    )
    if settings_compat:
        config.addinivalue_line(
            "markers",
            "timeout(timeout, *, func_only=False): pytest-timeout's spelling of "
            "@pytest.mark.expires, honoured by pytest-expiry.",
        )


def _signals() -> ExpirySignals:
    try:
        return default_signals()
    except ValueError as error:
        raise pytest.UsageError(f"environment variable PYTEST_EXPIRY_SIGNALS: {error}") from None


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Any:
    if config.getoption("expiry_isolate") and not hasattr(config, "workerinput"):
        isolate_with_one_worker(config)
    return (yield)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = Settings.from_config(config)
    _register_markers(config, settings.timeout_compat)
    if os.name != "posix":
        sys.stderr.write(
            "pytest-expiry: deadlines are not enforced on this platform (POSIX only)\n"
        )
        return
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        address = workerinput.get(WORKER_KEY)
        if address is not None:
            directory, signal_text, session_deadline = address
            fixed = (directory, parse_signals(signal_text))
            budget = _budget(settings, session_deadline)
            runner = ExpiryRunner(config, settings, lambda: fixed, budget)
            config.pluginmanager.register(runner, _RUNNER)
        return
    session_deadline = clock() + settings.session
    controller = ExpiryController(config, settings, _signals(), session_deadline)
    config.pluginmanager.register(controller, _CONTROLLER)
    if getattr(config.option, "dist", "no") != "no" and not config.option.collectonly:
        config.pluginmanager.register(XdistBridge(controller), "expiry-xdist")
    else:
        budget = _budget(settings, session_deadline)
        runner = ExpiryRunner(config, settings, controller.watchdog_address, budget)
        config.pluginmanager.register(runner, _RUNNER)


def _budget(settings: Settings, session_deadline: float) -> SessionBudget | None:
    return SessionBudget(settings.session, session_deadline) if settings.session else None


def pytest_unconfigure(config: pytest.Config) -> None:
    runner = config.pluginmanager.get_plugin(_RUNNER)
    if isinstance(runner, ExpiryRunner):
        runner.close()
    controller = config.pluginmanager.get_plugin(_CONTROLLER)
    if isinstance(controller, ExpiryController):
        controller.stop()
