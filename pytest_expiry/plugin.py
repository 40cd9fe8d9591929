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
from pytest_expiry.leaks import LEAK_MODES
from pytest_expiry.runner import ExpiryRunner
from pytest_expiry.settings import (
    Settings,
    fraction,
    positive,
    seconds,
    timeout_compat_possible,
)
from pytest_expiry.signals import ExpirySignals, default_signals, parse_signals
from pytest_expiry.timer.api import clock
from pytest_expiry.xdist_bridge import WORKER_KEY, XdistBridge, isolate_with_one_worker

_CONTROLLER = "expiry-controller"
_RUNNER = "expiry-runner"


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("expiry", "pytest-expiry: deadlines enforced by a watchdog process")
    group.addoption(
        "--expiry", type=seconds, metavar="SECONDS",
        help="deadline of every test (setup, call and teardown together); 0 disables. "
        "Also ini 'expiry' and env PYTEST_EXPIRY; @pytest.mark.expires(SECONDS) overrides.",
    )  # fmt: skip
    group.addoption(
        "--expiry-grace", type=seconds, metavar="SECONDS",
        help="after an expiry: time a test process has to stop, and SIGTERM -> SIGKILL delay "
        "for its children (default 2).",
    )  # fmt: skip
    group.addoption(
        "--expiry-scale", type=positive, metavar="FACTOR",
        help="multiply every deadline, e.g. 3 on a slow CI machine (default 1).",
    )  # fmt: skip
    group.addoption(
        "--expiry-slow", type=fraction, metavar="FRACTION",
        help="name a test as SLOW once it has used this fraction of its deadline "
        "(default 0.5; 0 disables).",
    )  # fmt: skip
    group.addoption(
        "--expiry-func-only", action="store_true", default=None,
        help="deadlines cover the test function only, not its fixtures' setup and teardown.",
    )  # fmt: skip
    group.addoption(
        "--expiry-leaks", choices=LEAK_MODES, metavar="MODE",
        help="processes a test leaves running after its teardown: kill (report and end them; "
        "the default on Linux), warn (report only), fail (end them and fail the test), off.",
    )  # fmt: skip
    group.addoption(
        "--expiry-session", type=seconds, metavar="SECONDS",
        help="budget of the whole session: once exceeded, the running test expires and no "
        "further test runs (they are reported as skipped: not run).",
    )  # fmt: skip
    group.addoption(
        "--expiry-collect", type=seconds, metavar="SECONDS",
        help="deadline for importing each test module (default: the test deadline); a module "
        "that hangs at import becomes a collection error.",
    )  # fmt: skip
    group.addoption(
        "--expiry-exit", type=seconds, metavar="SECONDS",
        help="after the session, how long the interpreter may take to exit before what blocks "
        "it is reported and it exits with the session's status (default 10 when a deadline "
        "is set; 0 disables).",
    )  # fmt: skip
    group.addoption(
        "--expiry-report", metavar="PATH", help="write every expiry event to PATH as JSON."
    )
    group.addoption(
        "--expiry-isolate", action="store_true", default=False,
        help="run the tests in a pytest-xdist worker, so that a test that has to be killed "
        "(C code holding the GIL, a swallowed Expired) fails and the session carries on.",
    )  # fmt: skip
    group.addoption(
        "--expiry-no-timeout-compat", dest="expiry_timeout_compat", action="store_false",
        default=None,
        help="ignore pytest-timeout's marker, option and ini value (honoured by default when "
        "pytest-timeout is not installed).",
    )  # fmt: skip
    for name, help_text in [
        ("expiry", "default deadline of every test in seconds (0 disables)"),
        ("expiry_grace", "seconds between interrupt or SIGTERM and SIGKILL (default 2)"),
        ("expiry_scale", "factor applied to every deadline (default 1)"),
        ("expiry_slow", "fraction of the deadline after which a test is SLOW (default 0.5)"),
        ("expiry_func_only", "true: deadlines cover the test function only"),
        ("expiry_report", "path of the JSON report"),
        ("expiry_leaks", "kill, warn, fail or off: processes a test leaves running"),
        ("expiry_session", "budget of the whole session in seconds (0: none)"),
        ("expiry_collect", "deadline for importing each test module (default: expiry)"),
        ("expiry_exit", "seconds the interpreter may take to exit after the session"),
        ("expiry_timeout_compat", "false: ignore pytest-timeout's marker and settings"),
    ]:
        parser.addini(name, help_text, default="")
    if timeout_compat_possible():
        group.addoption(
            "--timeout", type=seconds, metavar="SECONDS",
            help="pytest-timeout's spelling of --expiry (pytest-timeout is not installed).",
        )  # fmt: skip
        parser.addini("timeout", "pytest-timeout's spelling of ini 'expiry'", default="")


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
