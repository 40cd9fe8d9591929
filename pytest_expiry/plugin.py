"""The pytest entry point: options, ini values, markers, and wiring the session together.

* :class:`~pytest_expiry.session.ExpirySession` owns the watchdog and the reports (in
  plain pytest, or in the xdist controller);
* :class:`~pytest_expiry.scoping.ScopeHooks` arms a scope per test (in the process that runs
  tests: plain pytest, or each xdist worker, which reaches its controller's watchdog, or runs
  its own on another host: :mod:`pytest_expiry.xdist.worker`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry import hookspecs

# the rest of the package is imported from the hooks below, once its assertion rewriting is
# turned off (see _skip_assertion_rewriting)
if TYPE_CHECKING:
    from pytest_expiry.budget import SessionBudget
    from pytest_expiry.pertest import PerTest
    from pytest_expiry.settings import Settings
    from pytest_expiry.signals import ExpirySignals

_CONTROLLER = "expiry-session"
_RUNNER = "expiry-scopes"
_LEAKS = "expiry-leaks"
_PER_TEST = "expiry-per-test"
_PACKAGE = __name__.partition(".")[0]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    _skip_assertion_rewriting(pluginmanager)
    pluginmanager.add_hookspecs(hookspecs)
    from pytest_expiry.exit import prepare  # noqa: PLC0415

    prepare()  # the exit guard's atexit handler, before conftest files and tests register theirs


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
        from pytest_expiry.xdist.controller import isolate_with_one_worker  # noqa: PLC0415

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
    from pytest_expiry.pertest import PerTest  # noqa: PLC0415

    per_test = PerTest()
    config.pluginmanager.register(per_test, _PER_TEST)
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    runs_tests = workerinput is not None or getattr(config.option, "dist", "no") == "no"
    if settings.leaks != "off" and runs_tests:
        from pytest_expiry.leaks.plugin import LeakCheck  # noqa: PLC0415

        per_test.leaks = LeakCheck(settings)
        config.pluginmanager.register(per_test.leaks, _LEAKS)
    if settings.learn or settings.history:
        from pytest_expiry.learning import install  # noqa: PLC0415

        install(config, settings, workerinput)
    if workerinput is not None:
        _configure_worker(config, settings, workerinput, per_test)
    else:
        _configure_session(config, settings, per_test)


def _configure_worker(
    config: pytest.Config, settings: Settings, workerinput: dict[str, Any], per_test: PerTest
) -> None:
    """An xdist worker runs tests against its controller's watchdog, or its own."""
    from pytest_expiry.xdist import WORKER_KEY  # noqa: PLC0415

    card = workerinput.get(WORKER_KEY)
    if card is not None:
        from pytest_expiry.xdist.worker import worker_watchdog  # noqa: PLC0415

        found = worker_watchdog(config, settings, card, str(workerinput.get("workerid")))
        if found is not None:
            _register_scopes(config, settings, per_test, *found)


def _configure_session(config: pytest.Config, settings: Settings, per_test: PerTest) -> None:
    """The session's process owns the watchdog; it runs the tests too, unless xdist does."""
    from pytest_expiry.clock import clock  # noqa: PLC0415
    from pytest_expiry.session import ExpirySession  # noqa: PLC0415

    session_deadline = clock() + settings.session
    controller = ExpirySession(config, settings, _signals(), session_deadline)
    config.pluginmanager.register(controller, _CONTROLLER)
    per_test.session = controller
    if getattr(config.option, "dist", "no") != "no" and not config.option.collectonly:
        from pytest_expiry.xdist.controller import XdistBridge  # noqa: PLC0415

        config.pluginmanager.register(XdistBridge(controller), "expiry-xdist")
    else:
        budget = _budget(settings, session_deadline)
        _register_scopes(config, settings, per_test, controller.watchdog_address, budget)


def _register_scopes(
    config: pytest.Config,
    settings: Settings,
    per_test: PerTest,
    connect: Callable[[bool], tuple[str, ExpirySignals]],
    budget: SessionBudget | None,
) -> None:
    """The hooks that put tests (and, with ``--expiry-collect``, imports) in scopes, and the
    session budget that caps their deadlines."""
    from pytest_expiry.scoping import ScopeHooks  # noqa: PLC0415

    hooks = ScopeHooks(config, settings, connect, budget)
    config.pluginmanager.register(hooks, _RUNNER)
    per_test.scopes = hooks
    if budget is not None:
        config.pluginmanager.register(budget, "expiry-session-budget")
    if settings.collect:
        from pytest_expiry.importscopes import ImportScopes  # noqa: PLC0415

        config.pluginmanager.register(ImportScopes(hooks, settings.collect), "expiry-imports")


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
