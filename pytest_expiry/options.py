"""Every option pytest-expiry adds, in one table, and what each accepts.

Each option gives a command-line flag and, under the same name with underscores, an ini value
(``--expiry-grace`` and ``expiry_grace``); yes/no ini values are declared ``type="bool"``.
The parsers below are argparse ``type=`` functions, also applied to the ini values, the
environment variables and the markers (:mod:`pytest_expiry.settings`): each returns the value
or raises ``argparse.ArgumentTypeError`` naming it and what is allowed.

The limits:

* a deadline or budget (``--expiry``, ``--timeout``, ``--expiry-collect``, ``--expiry-exit``,
  ``--expiry-session``, markers, ``PYTEST_EXPIRY``) is 0, which disables it, or from
  :data:`MIN_SECONDS` (1 ms: a shorter one could never be met) to :data:`MAX_SECONDS`
  (10**7 s, about 115 days); ``--expiry-grace`` is from 0 to :data:`MAX_SECONDS`;
* ``--expiry-scale`` is from :data:`MIN_SCALE` to :data:`MAX_SCALE` (0.01 to 100);
* ``--expiry-learn`` is 0 (off) or from 1 to :data:`MAX_LEARN`; ``--expiry-learn-min`` is
  from :data:`MIN_SECONDS` to :data:`MAX_SECONDS`.

So every deadline, once scaled, is at most 10**9 s: finite, and within what ``time.sleep``,
``select`` and ``threading.TIMEOUT_MAX`` (about 9.2e9 s) accept.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from typing import Any

import pytest

from pytest_expiry.leaks.processes import LEAK_MODES

__all__ = [
    "CHILD_STACKS",
    "MAX_SCALE",
    "MAX_SECONDS",
    "MIN_SCALE",
    "MIN_SECONDS",
    "SECONDS_HELP",
    "add_options",
    "checked",
    "deadline_ok",
    "factor",
    "fraction",
    "grace",
    "learn_factor",
    "learn_min",
    "report_path",
    "seconds",
]

MIN_SECONDS = 0.001
"""The shortest deadline that is not 0 (off): shorter ones could never be met."""
MAX_SECONDS = 10**7
"""The longest deadline, budget or grace, in seconds (about 115 days)."""
MIN_SCALE = 0.01
"""The smallest ``--expiry-scale``."""
MAX_SCALE = 100
"""The largest ``--expiry-scale``: with :data:`MAX_SECONDS`, a deadline of at most 10**9 s."""
CHILD_STACKS = ("auto", "hook", "off")
"""``--expiry-child-stacks``: how the watchdog gets the stacks of Python processes a test
started (an external unwinder when one is available / the start-up hook / none)."""

SECONDS_HELP = (
    f"a number of seconds (0 disables; otherwise at least {MIN_SECONDS} s and at most "
    f"{MAX_SECONDS} s, about 115 days)"
)
_GRACE_HELP = f"a number of seconds from 0 to {MAX_SECONDS}"
_FACTOR_HELP = f"a factor from {MIN_SCALE} to {MAX_SCALE}"


def _number(text: str, allowed: str, accept: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}")
    return value or 0.0  # -0 is 0


def deadline_ok(value: float) -> bool:
    """Whether ``value`` (a finite number) is a valid deadline: 0, or within the limits."""
    return value == 0 or MIN_SECONDS <= value <= MAX_SECONDS


def seconds(text: str) -> float:
    """A deadline or budget: 0 (off), or from :data:`MIN_SECONDS` to :data:`MAX_SECONDS`.
    Raises ``argparse.ArgumentTypeError`` naming ``text`` and what is allowed."""
    return _number(text, SECONDS_HELP, deadline_ok)


def grace(text: str) -> float:
    """The grace period: a number of seconds from 0 to :data:`MAX_SECONDS`."""
    return _number(text, _GRACE_HELP, lambda v: 0 <= v <= MAX_SECONDS)


def factor(text: str) -> float:
    """The scale: a factor from :data:`MIN_SCALE` to :data:`MAX_SCALE`."""
    return _number(text, _FACTOR_HELP, lambda v: MIN_SCALE <= v <= MAX_SCALE)


MAX_LEARN = 1000
"""The largest ``--expiry-learn`` factor."""
_LEARN_HELP = (
    f"a factor from 1 to {MAX_LEARN} (a learned deadline is that many times the longest "
    "recorded passing duration; 0 turns learning off)"
)


def learn_factor(text: str) -> float:
    """``--expiry-learn``: 0 (off), or a factor from 1 to :data:`MAX_LEARN` (below 1, the
    slowest recorded passing run would not fit in the learned deadline)."""
    return _number(text, _LEARN_HELP, lambda v: v == 0 or 1 <= v <= MAX_LEARN)


def learn_min(text: str) -> float:
    """``--expiry-learn-min``: the least learned deadline, from :data:`MIN_SECONDS` to
    :data:`MAX_SECONDS` (learning has no 0 to turn off: use ``--expiry-learn=0``)."""
    return _number(
        text,
        f"a number of seconds from {MIN_SECONDS} to {MAX_SECONDS} (the least learned deadline)",
        lambda v: MIN_SECONDS <= v <= MAX_SECONDS,
    )


def fraction(text: str) -> float:
    """The SLOW threshold: a fraction of the deadline, 0 <= f < 1 (0 disables)."""
    return _number(
        text,
        "a fraction of the deadline, at least 0 and below 1 (0 disables)",
        lambda v: 0 <= v < 1,
    )


def report_path(text: str) -> str:
    """The JSON report's path, if the report can be written there: it does not name a
    directory, and the nearest directory of it that exists is writable (the missing ones are
    created at the end). Raises ``argparse.ArgumentTypeError`` saying why not."""
    if not text:
        return text
    problem = _unwritable(text)
    if problem:
        raise argparse.ArgumentTypeError(
            f"{text!r} cannot be written: {problem}; give the path of a file in a writable "
            "directory"
        )
    return text


def _unwritable(text: str) -> str | None:
    path = os.path.abspath(text)
    if text.endswith(os.sep) or os.path.isdir(path):
        return "it names a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "the file is not writable"
    directory = os.path.dirname(path)
    while not os.path.exists(directory) and os.path.dirname(directory) != directory:
        directory = os.path.dirname(directory)
    shown = directory if os.path.isabs(text) else os.path.relpath(directory)
    if not os.path.isdir(directory):
        return f"{shown} is not a directory"
    try:  # the only check that holds for every user and file system: create a file there
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as error:
        return f"no file can be created in {shown} ({error.strerror or error})"
    return None


def checked(where: str, text: str, parse: Any) -> Any:
    """``parse(text)``, or a ``pytest.UsageError`` that starts with ``where`` (the source)."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise pytest.UsageError(f"{where}: {error}") from None


_SECONDS: dict[str, Any] = {"type": seconds, "metavar": "SECONDS"}
_LIMITS = f"0 disables; otherwise {MIN_SECONDS} to {MAX_SECONDS}"

_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("expiry", _SECONDS,
     f"deadline of every test (setup, call and teardown together); {_LIMITS}. Also env "
     "PYTEST_EXPIRY; @pytest.mark.expires(SECONDS) overrides."),
    ("expiry-grace", {"type": grace, "metavar": "SECONDS"},
     "after an expiry: time a test process has to stop, and SIGTERM -> SIGKILL delay for its "
     f"children (default 2; 0 to {MAX_SECONDS})."),
    ("expiry-scale", {"type": factor, "metavar": "FACTOR"},
     f"multiply every deadline, e.g. 3 on a slow CI machine (default 1; {MIN_SCALE} to "
     f"{MAX_SCALE})."),
    ("expiry-slow", {"type": fraction, "metavar": "FRACTION"},
     "name a test as SLOW once it has used this fraction of its deadline (default 0.5; "
     "0 disables)."),
    ("expiry-func-only", {"action": "store_true", "default": None},
     "deadlines cover the test function only, not its fixtures' setup and teardown."),
    ("expiry-leaks", {"choices": LEAK_MODES, "metavar": "MODE"},
     "processes a test leaves running after its teardown: warn (report them and touch "
     "nothing; the default), kill (report and end them: SIGTERM, grace, SIGKILL), fail (end "
     "them and error the test), off. Linux only; elsewhere always off."),
    ("expiry-child-stacks", {"choices": CHILD_STACKS, "metavar": "MODE"},
     "how the watchdog gets the stacks of the Python processes a test started: auto (an "
     "external unwinder, py-spy, when one is available, else none; nothing is added to the "
     "children; the default), hook (a start-up hook in each child, which keeps a dump file "
     "open), off (no child stacks)."),
    ("expiry-session", _SECONDS,
     "budget of the whole session: once exceeded, the running test expires and no further "
     f"test runs (they are reported as skipped: not run); {_LIMITS}."),
    ("expiry-collect", _SECONDS,
     "deadline for importing each test module (default: the test deadline); a module that "
     "hangs at import becomes a collection error."),
    ("expiry-exit", _SECONDS,
     "after the session, how long the interpreter may take to exit before what blocks it is "
     "reported and it exits with the session's status (default 10 when a deadline is set; "
     "0 disables)."),
    ("expiry-report", {"type": report_path, "metavar": "PATH"},
     "write every expiry event to PATH as JSON (checked at start: a file in a writable "
     "directory)."),
    ("expiry-learn", {"type": learn_factor, "metavar": "FACTOR"},
     "learned deadlines: a test with a recorded history gets FACTOR x its longest recorded "
     "passing duration (at least --expiry-learn-min), never more than its deadline without "
     "learning (default 0: off; otherwise 1 to 1000)."),
    ("expiry-learn-min", {"type": learn_min, "metavar": "SECONDS"},
     "the least learned deadline (default 5)."),
    ("expiry-history", {"type": report_path, "metavar": "PATH"},
     "the JSON file of passing durations that deadlines are learned from, updated at the end "
     "of the session (default: in pytest's cache; with -p no:cacheprovider, none). Given "
     "without --expiry-learn, durations are recorded but nothing is learned."),
]  # fmt: skip


def add_options(parser: pytest.Parser, plugins: pytest.PytestPluginManager | None = None) -> None:
    """Declare every option and its ini value (a yes/no one with ``type="bool"``)."""
    group = parser.getgroup("expiry", "pytest-expiry: deadlines enforced by a watchdog process")
    for name, kwargs, help_text in _OPTIONS:
        group.addoption(f"--{name}", help=help_text, **kwargs)
        if kwargs.get("action") == "store_true":
            parser.addini(name.replace("-", "_"), help_text, type="bool", default=None)
        else:
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
    parser.addini("expiry_timeout_compat", f"false: ignore {compat}", type="bool", default=None)
    from pytest_expiry import timeout_compat  # noqa: PLC0415 - it imports this module

    if timeout_compat.compat_possible(plugins):
        timeout_compat.register(parser, group, _SECONDS)
