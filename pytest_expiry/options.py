"""Every option pytest-expiry adds, in one table: each gives a command-line flag and, under
the same name with underscores, an ini value (``--expiry-grace`` and ``expiry_grace``)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_expiry.leaks import LEAK_MODES
from pytest_expiry.settings import fraction, positive, seconds, timeout_compat_possible

__all__ = ["add_options"]

_SECONDS: dict[str, Any] = {"type": seconds, "metavar": "SECONDS"}

_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("expiry", _SECONDS,
     "deadline of every test (setup, call and teardown together); 0 disables. Also env "
     "PYTEST_EXPIRY; @pytest.mark.expires(SECONDS) overrides."),
    ("expiry-grace", _SECONDS,
     "after an expiry: time a test process has to stop, and SIGTERM -> SIGKILL delay for its "
     "children (default 2)."),
    ("expiry-scale", {"type": positive, "metavar": "FACTOR"},
     "multiply every deadline, e.g. 3 on a slow CI machine (default 1)."),
    ("expiry-slow", {"type": fraction, "metavar": "FRACTION"},
     "name a test as SLOW once it has used this fraction of its deadline (default 0.5; "
     "0 disables)."),
    ("expiry-func-only", {"action": "store_true", "default": None},
     "deadlines cover the test function only, not its fixtures' setup and teardown."),
    ("expiry-leaks", {"choices": LEAK_MODES, "metavar": "MODE"},
     "processes a test leaves running after its teardown: kill (report and end them; the "
     "default on Linux), warn (report only), fail (end them and fail the test), off."),
    ("expiry-session", _SECONDS,
     "budget of the whole session: once exceeded, the running test expires and no further "
     "test runs (they are reported as skipped: not run)."),
    ("expiry-collect", _SECONDS,
     "deadline for importing each test module (default: the test deadline); a module that "
     "hangs at import becomes a collection error."),
    ("expiry-exit", _SECONDS,
     "after the session, how long the interpreter may take to exit before what blocks it is "
     "reported and it exits with the session's status (default 10 when a deadline is set; "
     "0 disables)."),
    ("expiry-report", {"metavar": "PATH"}, "write every expiry event to PATH as JSON."),
]  # fmt: skip


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("expiry", "pytest-expiry: deadlines enforced by a watchdog process")
    for name, kwargs, help_text in _OPTIONS:
        group.addoption(f"--{name}", help=help_text, **kwargs)
        parser.addini(name.replace("-", "_"), help_text, default="")
    group.addoption(
        "--expiry-isolate", action="store_true", default=False,
        help="run the tests in a pytest-xdist worker, so that a test that has to be killed "
        "(C code holding the GIL, a swallowed Expired) fails and the session carries on.",
    )  # fmt: skip
    compat = "pytest-timeout's marker, option and ini value (honoured unless it is installed)"
    group.addoption(
        "--expiry-no-timeout-compat", dest="expiry_timeout_compat", action="store_false",
        default=None, help=f"ignore {compat}.",
    )  # fmt: skip
    parser.addini("expiry_timeout_compat", f"false: ignore {compat}", default="")
    if timeout_compat_possible():
        group.addoption(
            "--timeout", **_SECONDS,
            help="pytest-timeout's spelling of --expiry (pytest-timeout is not installed).",
        )  # fmt: skip
        parser.addini("timeout", "pytest-timeout's spelling of ini 'expiry'", default="")
