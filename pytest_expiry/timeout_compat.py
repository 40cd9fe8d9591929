"""pytest-timeout's spellings, honoured while pytest-timeout is not installed.

"Replace pytest-timeout by pytest-expiry and nothing else has to change": every option, ini
value, environment variable and marker form of pytest-timeout 2.4 is accepted, and means here
what it meant there:

* ``--timeout``, ``PYTEST_TIMEOUT``, ini ``timeout``: the default deadline (below ``--expiry``,
  ``PYTEST_EXPIRY`` and ini ``expiry``; see :mod:`pytest_expiry.settings`);
* ``--session-timeout``, ini ``session_timeout``: ``--expiry-session``;
* ini ``timeout_func_only``: ``--expiry-func-only``;
* ``--timeout-disable-debugger-detection``, ini ``timeout_disable_debugger_detection``: a
  deadline is not paused while a debugger is attached;
* ``--timeout-method``, ``--timeout_method``, ini ``timeout_method``, and the marker's
  ``method``: checked (``signal`` or ``thread``), then explained once in the header, since the
  watchdog has one method;
* ``@pytest.mark.timeout(timeout=None, method=None, func_only=None)``: the timeout may be a
  number or a string of one, and ``None`` (or leaving it out) keeps the default deadline.

When pytest-timeout is installed (and not disabled with ``-p no:timeout``) it owns these
names; if both plugins would then enforce deadlines, :func:`both_enforce_warning` says so.
"""

from __future__ import annotations

import argparse
import functools
import os
from importlib import metadata
from typing import Any

import pytest

from pytest_expiry.options import checked, seconds

__all__ = [
    "METHODS",
    "both_enforce_warning",
    "compat_possible",
    "debugger_detection",
    "func_only",
    "marker_method_error",
    "method_note",
    "register",
    "session_seconds",
]

METHODS = ("signal", "thread")
"""pytest-timeout's methods; either is accepted, and neither changes what the watchdog does."""


def compat_possible(plugins: pytest.PytestPluginManager | None = None) -> bool:
    """pytest-timeout's spellings are ours to honour only while it is not installed, or
    (given the session's ``plugins``) while it is disabled with ``-p no:timeout``."""
    if plugins is not None and plugins.is_blocked("timeout"):
        return True
    return not _timeout_installed()


@functools.cache
def _timeout_installed() -> bool:
    """Whether pytest-timeout is installed: looked up once a process (each lookup scans
    ``sys.path``, and options, settings and configure each ask)."""
    try:
        metadata.distribution("pytest-timeout")
    except metadata.PackageNotFoundError:
        return False
    return True


def register(parser: pytest.Parser, group: Any, seconds_kwargs: dict[str, Any]) -> None:
    """Declare pytest-timeout's options and ini values (only call while it is absent)."""
    group.addoption(
        "--timeout", **seconds_kwargs,
        help="pytest-timeout's spelling of --expiry (pytest-timeout is not installed).",
    )  # fmt: skip
    for flag in ("--timeout-method", "--timeout_method"):
        group.addoption(
            flag, dest="timeout_method", choices=METHODS,
            help="pytest-timeout's method: accepted, and unused (the watchdog has one method).",
        )  # fmt: skip
    group.addoption(
        "--timeout-disable-debugger-detection", dest="timeout_disable_debugger_detection",
        action="store_true", default=None,
        help="do not pause a deadline while a debugger (pdb, pydevd, ...) is attached.",
    )  # fmt: skip
    group.addoption(
        "--session-timeout", dest="session_timeout", **seconds_kwargs,
        help="pytest-timeout's spelling of --expiry-session.",
    )  # fmt: skip
    parser.addini("timeout", "pytest-timeout's spelling of ini 'expiry'", default="")
    parser.addini("timeout_method", "pytest-timeout's method (accepted, unused)", default="")
    parser.addini(
        "timeout_func_only", "pytest-timeout's spelling of ini 'expiry_func_only'",
        type="bool", default=None,
    )  # fmt: skip
    parser.addini(
        "timeout_disable_debugger_detection",
        "true: do not pause a deadline while a debugger is attached", type="bool", default=None,
    )  # fmt: skip
    parser.addini(
        "session_timeout", "pytest-timeout's spelling of ini 'expiry_session'", default=""
    )


def _method(text: str) -> str:
    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(METHODS)}")
    return text


def session_seconds(config: pytest.Config) -> float:
    """``--session-timeout``, else ini ``session_timeout``, else 0 (none)."""
    option = config.getoption("session_timeout", None)
    if option is not None:
        return float(option)
    ini = str(config.getini("session_timeout")).strip()
    return float(checked(f"ini option session_timeout = {ini}", ini, seconds)) if ini else 0.0


def func_only(config: pytest.Config) -> bool | None:
    """Ini ``timeout_func_only``, or None when it is not given."""
    value = config.getini("timeout_func_only")
    return None if value is None else bool(value)


def debugger_detection(config: pytest.Config) -> bool:
    """False when told (option or ini) not to pause deadlines in a debugger."""
    option = config.getoption("timeout_disable_debugger_detection", None)
    if option:
        return False
    return not config.getini("timeout_disable_debugger_detection")


def method_note(config: pytest.Config) -> str | None:
    """The header's explanation of a ``timeout_method`` given (checked), or None."""
    method = config.getoption("timeout_method", None)
    where = "--timeout-method"
    if method is None:
        method = str(config.getini("timeout_method")).strip() or None
        where = "ini timeout_method"
        if method is not None:
            checked(f"ini option timeout_method = {method}", method, _method)
    if method is None:
        return None
    return (
        f"{where}={method} accepted and unused: the watchdog has one method (it interrupts "
        "the test where it hangs, and kills its process when it cannot be interrupted)"
    )


def marker_method_error(marker: pytest.Mark) -> str | None:
    """What is wrong with a ``timeout`` marker's ``method`` (positional or keyword), or None."""
    method = marker.kwargs.get("method", marker.args[1] if len(marker.args) > 1 else None)
    if method is None or method in METHODS:
        return None
    return f"method must be one of {', '.join(METHODS)}, not {method!r}"


def both_enforce_warning(config: pytest.Config, expiry_default: float) -> str | None:
    """When pytest-timeout is installed and active and both plugins would enforce deadlines,
    the header's warning saying so and what to do; otherwise None."""
    if compat_possible(config.pluginmanager) or not config.pluginmanager.has_plugin("timeout"):
        return None
    given = _pytest_timeout_given(config)
    if given is None or not expiry_default:
        return None
    return (
        f"pytest-timeout is also enforcing deadlines ({given}) alongside --expiry: whichever "
        "fires first wins, and the other's report is lost. Keep one: '-p no:timeout' "
        "(pytest-expiry then honours pytest-timeout's settings), or '-p no:expiry'."
    )


def _pytest_timeout_given(config: pytest.Config) -> str | None:
    option = config.getoption("timeout", None)
    candidates = [
        ("--timeout", option),
        ("PYTEST_TIMEOUT", os.environ.get("PYTEST_TIMEOUT")),
        ("ini timeout", config.getini("timeout")),
    ]
    for where, value in candidates:
        try:
            if value not in (None, "") and float(value) > 0:
                return f"{where}={float(value):g}"
        except (TypeError, ValueError):
            continue  # pytest-timeout reports its own bad values
    return None
