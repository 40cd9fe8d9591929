"""The pytest entry point: options, ini values, markers, and wiring the session together.

* :class:`~pytest_expiry.controller.ExpiryController` owns the watchdog and the reports (in
  plain pytest, or in the xdist controller);
* :class:`~pytest_expiry.runner.ExpiryRunner` arms a scope per test (in the process that runs
  tests: plain pytest, or each xdist worker, which reaches its controller's watchdog).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry import hookspecs

# the rest of the package is imported from the hooks below, once its assertion rewriting is
# turned off (see _skip_assertion_rewriting)
if TYPE_CHECKING:
    from pytest_expiry.budget import SessionBudget
    from pytest_expiry.settings import Settings
    from pytest_expiry.signals import ExpirySignals

_CONTROLLER = "expiry-controller"
_RUNNER = "expiry-runner"
_LEAKS = "expiry-leaks"
_PACKAGE = __name__.partition(".")[0]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    _skip_assertion_rewriting(pluginmanager)
    pluginmanager.add_hookspecs(hookspecs)


def _skip_assertion_rewriting(pluginmanager: pytest.PytestPluginManager) -> None:
    """pytest rewrites the asserts of every module of an installed plugin as it imports it.
    Ours need no rewriting, and where bytecode cannot be cached (``PYTHONDONTWRITEBYTECODE``,
    a read-only install) rewriting recompiles the plugin at every start: 20-30 ms. The hook's
    record of what to rewrite is private, hence the care: if it is not there, nothing
    changes."""
    hook = getattr(pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)
    cache = getattr(hook, "_marked_for_rewrite_cache", None)
    if isinstance(marked, set) and _PACKAGE in marked:
        marked.discard(_PACKAGE)
        if isinstance(cache, dict):
            cache.clear()


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_expiry.options import add_options  # noqa: PLC0415

    add_options(parser, pluginmanager)


def _register_markers(config: pytest.Config, settings_compat: bool) -> None:
    config.addinivalue_line(
        "markers",
        "expires(seconds, *, func_only=False): deadline of this test in seconds (0 disables), "
        "overriding --expiry; func_only=True leaves fixtures out of it.",
    )
    if settings_compat:
        config.addinivalue_line(
            "markers",
            "timeout(timeout=None, method=None, *, func_only=None): pytest-timeout's spelling of "
            "@pytest.mark.expires, honoured by pytest-expiry.",
        )


def _signals() -> ExpirySignals:
    from pytest_expiry.signals import default_signals  # noqa: PLC0415

    try:
        return default_signals()
    except ValueError as error:
        raise pytest.UsageError(f"environment variable PYTEST_EXPIRY_SIGNALS: {error}") from None


@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Any:
    if config.getoption("expiry_isolate") and not hasattr(config, "workerinput"):
        from pytest_expiry.xdist_bridge import isolate_with_one_worker  # noqa: PLC0415

        isolate_with_one_worker(config)
    return (yield)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    from pytest_expiry.settings import Settings  # noqa: PLC0415

    settings = Settings.from_config(config)
    _register_markers(config, settings.timeout_compat)
    if os.name != "posix":
        sys.stderr.write(
            "pytest-expiry: deadlines are not enforced on this platform (POSIX only)\n"
        )
        return
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    runs_tests = workerinput is not None or getattr(config.option, "dist", "no") == "no"
    if settings.leaks != "off" and runs_tests:
        from pytest_expiry.leakcheck import PER_TEST, LeakCheck  # noqa: PLC0415

        leak_check = LeakCheck(settings)
        config.pluginmanager.register(leak_check, _LEAKS)
        config.pluginmanager.register(leak_check.per_test, PER_TEST)  # a runner may adopt them
    if settings.learn or settings.history:
        from pytest_expiry.learning import install  # noqa: PLC0415

        install(config, settings, workerinput)
    if workerinput is not None:
        _configure_worker(config, settings, workerinput)
    else:
        _configure_session(config, settings)


def _configure_worker(
    config: pytest.Config, settings: Settings, workerinput: dict[str, Any]
) -> None:
    """An xdist worker runs tests against its controller's watchdog."""
    from pytest_expiry.runner import ExpiryRunner  # noqa: PLC0415
    from pytest_expiry.signals import parse_signals  # noqa: PLC0415
    from pytest_expiry.xdist_bridge import WORKER_KEY  # noqa: PLC0415

    address = workerinput.get(WORKER_KEY)
    if address is not None:
        directory, signal_text, session_deadline = address
        connect = _WorkerWatchdog(directory, parse_signals(signal_text), settings.grace)
        budget = _budget(settings, session_deadline)
        runner = ExpiryRunner(config, settings, connect, budget)
        config.pluginmanager.register(runner, _RUNNER)


def _configure_session(config: pytest.Config, settings: Settings) -> None:
    """The session's process owns the watchdog; it runs the tests too, unless xdist does."""
    from pytest_expiry.controller import ExpiryController  # noqa: PLC0415
    from pytest_expiry.timer.api import clock  # noqa: PLC0415

    session_deadline = clock() + settings.session
    controller = ExpiryController(config, settings, _signals(), session_deadline)
    config.pluginmanager.register(controller, _CONTROLLER)
    if getattr(config.option, "dist", "no") != "no" and not config.option.collectonly:
        from pytest_expiry.xdist_bridge import XdistBridge  # noqa: PLC0415

        config.pluginmanager.register(XdistBridge(controller), "expiry-xdist")
    else:
        from pytest_expiry.runner import ExpiryRunner  # noqa: PLC0415

        budget = _budget(settings, session_deadline)
        runner = ExpiryRunner(config, settings, controller.watchdog_address, budget)
        config.pluginmanager.register(runner, _RUNNER)


class _WorkerWatchdog:
    """An xdist worker's way to its watchdog: the controller's; or, once that one is found
    dead or stopped, one of the worker's own (its hard kills are then reported by xdist as
    a crash, without the watchdog's account)."""

    def __init__(self, directory: str, signals: ExpirySignals, grace: float) -> None:
        self._address = (directory, signals)
        self._grace = grace
        self._own: Any = None

    def __call__(self, fresh: bool) -> tuple[str, ExpirySignals]:
        if fresh:
            from pytest_expiry.launcher import WatchdogProcess  # noqa: PLC0415

            if self._own is not None:
                self._own.kill()
            self.stop()
            self._own = WatchdogProcess.launch(self._grace, self._address[1], None, "auto")
            self._address = (self._own.directory, self._address[1])
        return self._address

    def stop(self) -> None:
        if self._own is not None:
            self._own.stop()
            self._own = None


def _budget(settings: Settings, session_deadline: float) -> SessionBudget | None:
    from pytest_expiry.budget import SessionBudget  # noqa: PLC0415

    return SessionBudget(settings.session, session_deadline) if settings.session else None


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in (_LEAKS, _RUNNER):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            plugin.close()
    controller = config.pluginmanager.get_plugin(_CONTROLLER)
    if controller is not None:
        controller.stop()
