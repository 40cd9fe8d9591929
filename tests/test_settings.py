"""Parsing of option values, of markers and of ``PYTEST_EXPIRY_SIGNALS``.

The option parsers (``pytest_expiry.options``) are argparse ``type=`` functions: they return
a value within the documented limits or raise ``argparse.ArgumentTypeError`` naming the value
and what is allowed. ``item_deadline`` (``pytest_expiry.settings``) turns an item's
``expires`` (or pytest-timeout's ``timeout``) marker into ``(seconds, func_only)``, scaled, or
raises ``MarkerError`` naming the marker. ``parse_signals`` accepts only the signals nobody
else needs. ``Settings.from_config`` resolves a real pytest configuration.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_expiry.options import (
    MAX_SCALE,
    MAX_SECONDS,
    MIN_SCALE,
    MIN_SECONDS,
    factor,
    fraction,
    grace,
    report_path,
    seconds,
)
from pytest_expiry.settings import MarkerError, Settings, item_deadline
from pytest_expiry.signals import parse_signals, usable_signals

_WITHOUT_OPTIONS: dict[str, Any] = {
    "default": 0.0, "grace": 2.0, "scale": 1.0, "func_only": False, "slow": 0.5,
    "report": None, "timeout_compat": True, "leaks": "off", "child_stacks": "off",
}  # fmt: skip
DEFAULTS = Settings(**{f.name: _WITHOUT_OPTIONS.get(f.name, 0.0) for f in fields(Settings)})
"""The settings of a session without options: no default deadline; every other bound
(collection, exit, session...) 0, which turns it off."""

BAD_NUMBERS = ["abc", "", " ", "nan", "NaN", "inf", "-inf", "infinity", "1e400", "10s", "1,5"]
TOO_BIG = ["10000000.5", "1e8", "1e308"]
LINUX = sys.platform.startswith("linux")


class FakeItem:
    """Just enough of a pytest.Item for ``item_deadline``: its own markers, no parent."""

    parent = None

    def __init__(self, *marks: pytest.Mark) -> None:
        self.own_markers = list(marks)


def mark(name: str, *args: Any, **kwargs: Any) -> pytest.Mark:
    """``@pytest.mark.<name>(*args, **kwargs)`` as a Mark (``with_args`` never decorates).

    The markers are registered by the plugin, which may not be loaded in this process."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        decorator: pytest.MarkDecorator = getattr(pytest.mark, name)
        return decorator.with_args(*args, **kwargs).mark


def deadline_of(*marks: pytest.Mark, settings: Settings = DEFAULTS) -> tuple[float, bool]:
    return item_deadline(FakeItem(*marks), settings)  # type: ignore[arg-type]  # a fake Item


def rejects(parse: Any, text: str, allowed: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as error:
        parse(text)
    assert repr(text) in str(error.value)
    assert allowed in str(error.value)


# --- seconds: a deadline or a budget -----------------------------------------------------

SECONDS = "a number of seconds (0 disables; otherwise at least 0.001 s and at most 10000000 s"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0.0), ("1", 1.0), ("0.25", 0.25), (" 2 ", 2.0), ("1e3", 1000.0), ("-0", 0.0),
     ("0.001", 0.001), ("10000000", 1e7)],
)  # fmt: skip
def test_seconds_accepts_zero_and_numbers_from_1_ms_to_10_million(text: str, value: float) -> None:
    assert seconds(text) == value
    assert math.copysign(1, seconds(text)) == 1  # -0 is plain 0


@pytest.mark.parametrize("text", [*BAD_NUMBERS, *TOO_BIG, "-1", "-0.001", "1e-300", "0.0009"])
def test_seconds_rejects_what_is_not_0_or_within_the_limits(text: str) -> None:
    rejects(seconds, text, SECONDS)


@given(st.floats() | st.text())
def test_seconds_of_anything_is_0_or_within_the_limits_or_names_it(value: float | str) -> None:
    text = value if isinstance(value, str) else repr(value)
    try:
        parsed = seconds(text)
    except argparse.ArgumentTypeError as error:
        assert repr(text) in str(error)
    else:
        assert parsed == 0 or MIN_SECONDS <= parsed <= MAX_SECONDS


# --- grace, scale and the SLOW fraction --------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("2", 2.0), ("1e-9", 1e-9), ("1e7", 1e7)])
def test_grace_accepts_0_up_to_10_million_seconds(text: str, value: float) -> None:
    assert grace(text) == value


@pytest.mark.parametrize("text", [*BAD_NUMBERS, *TOO_BIG, "-1"])
def test_grace_rejects_negatives_and_more_than_10_million_seconds(text: str) -> None:
    rejects(grace, text, "a number of seconds from 0 to 10000000")


@pytest.mark.parametrize(
    ("text", "value"), [("1", 1.0), ("3", 3.0), ("0.01", 0.01), ("100", 100.0)]
)
def test_the_scale_accepts_factors_from_a_hundredth_to_a_hundred(text: str, value: float) -> None:
    assert factor(text) == value


@pytest.mark.parametrize("text", [*BAD_NUMBERS, "0", "-0", "-1", "0.009", "1e-9", "100.5", "1e308"])
def test_the_scale_rejects_factors_outside_its_limits(text: str) -> None:
    rejects(factor, text, "a factor from 0.01 to 100")


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0.0), ("0.5", 0.5), ("0.3", 0.3), ("0.999", 0.999)]
)
def test_fraction_accepts_zero_up_to_but_excluding_one(text: str, value: float) -> None:
    assert fraction(text) == value


@pytest.mark.parametrize("text", [*BAD_NUMBERS, "1", "1.0", "2", "-0.1"])
def test_fraction_rejects_one_and_more_negatives_and_non_finite_values(text: str) -> None:
    rejects(fraction, text, "a fraction of the deadline")


# --- report_path: checked at start, without leaving anything behind ----------------------


@pytest.mark.parametrize("path", ["report.json", "existing.json", "new/sub/report.json", ""])
def test_a_report_path_that_can_be_written_is_accepted_and_nothing_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing.json").write_text("{}")
    assert report_path(path) == path
    assert sorted(os.listdir(tmp_path)) == ["existing.json"]
    assert (tmp_path / "existing.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (".", "it names a directory"),
        ("/", "it names a directory"),
        ("out/", "it names a directory"),
        ("blocker/report.json", "cannot be written: blocker is not a directory"),
        ("blocker/deeper/report.json", "written: blocker is not a directory"),
        pytest.param(
            "/proc/report.json", "no file can be created in /proc",
            marks=pytest.mark.skipif(not LINUX, reason="/proc is Linux's"),
        ),
    ],
)  # fmt: skip
def test_a_report_path_that_cannot_be_written_is_rejected_saying_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a regular file\n")
    rejects(report_path, path, problem)
    rejects(report_path, path, "give the path of a file in a writable directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_a_report_path_in_a_read_only_directory_is_rejected(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "old.json").write_text("{}")
    locked.chmod(0o500)
    try:
        rejects(report_path, str(locked / "report.json"), "no file can be created in")
        (locked / "old.json").chmod(0o400)
        rejects(report_path, str(locked / "old.json"), "the file is not writable")
    finally:
        locked.chmod(0o700)


# --- PYTEST_EXPIRY_SIGNALS ---------------------------------------------------------------

NEEDED = [
    "SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGCHLD", "SIGPIPE", "SIGSEGV", "SIGBUS",
    "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP", "SIGALRM", "SIGKILL", "SIGSTOP", "SIGCONT",
    "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGXCPU", "SIGXFSZ", "SIGSYS",
]  # fmt: skip
"""Signals pytest, the system or test suites need: never the plugin's."""
FINE = "use SIGUSR1, SIGUSR2"


@pytest.mark.parametrize("name", [n for n in NEEDED if hasattr(signal, n)])
def test_a_signal_someone_else_needs_is_refused_by_name_and_number(name: str) -> None:
    number = int(getattr(signal, name))
    for text in (f"{name},SIGUSR1", f"SIGUSR1,{number}", f"{name.lower()[3:]},USR2"):
        with pytest.raises(ValueError, match=FINE) as error:
            parse_signals(text)
        assert name in str(error.value)


def test_the_refusal_says_why_for_ctrl_c_and_the_uncatchable() -> None:
    with pytest.raises(ValueError, match="Ctrl-C stops pytest"):
        parse_signals("SIGINT,SIGTERM")
    with pytest.raises(ValueError, match="cannot be caught"):
        parse_signals("SIGUSR1,SIGKILL")


@pytest.mark.skipif(not hasattr(signal, "SIGRTMAX"), reason="no real-time signals")
def test_real_time_signals_are_accepted_by_name_and_offset() -> None:
    low, high = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    assert parse_signals("SIGRTMAX-2,SIGRTMAX-3") == (high - 2, high - 3)
    assert parse_signals(" rtmax - 1 , RTMAX") == (high - 1, high)
    assert parse_signals("SIGRTMIN+3,SIGRTMIN") == (low + 3, low)
    assert "or a real-time signal (SIGRTMIN to SIGRTMAX" in _refusal("SIGHUP,SIGUSR1")


def _refusal(text: str) -> str:
    with pytest.raises(ValueError) as error:
        parse_signals(text)
    return str(error.value)


def test_every_signal_parses_exactly_when_it_is_usable() -> None:
    usable = usable_signals()
    assert {int(signal.SIGUSR1), int(signal.SIGUSR2)} <= usable
    other = int(signal.SIGUSR1)
    for number in signal.valid_signals():
        partner = other if number != other else int(signal.SIGUSR2)
        if number in usable:
            assert parse_signals(f"{number},{partner}").stacks == number
        else:
            assert FINE in _refusal(f"{number},{partner}")


@pytest.mark.parametrize("text", ["SIG_DFL,USR1", "SIGRTMAX+1,USR1", "\u0663,USR1", "0,USR1"])
def test_what_is_not_a_signal_is_named(text: str) -> None:
    assert "is not a signal name or number" in _refusal(text)


# --- Settings.from_config: a real configuration ------------------------------------------


def settings_of(pytester: pytest.Pytester, *arguments: str, ini: str = "") -> Settings:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    return Settings.from_config(pytester.parseconfig(*arguments))


def test_leaks_are_warned_about_by_default_on_linux_and_off_elsewhere(
    pytester: pytest.Pytester,
) -> None:
    assert settings_of(pytester).leaks == ("warn" if LINUX else "off")
    assert settings_of(pytester, "--expiry-leaks=kill").leaks == ("kill" if LINUX else "off")


@pytest.mark.parametrize(
    ("arguments", "ini", "expected"),
    [((), "", "auto"), (("--expiry-child-stacks=hook",), "", "hook"),
     ((), "expiry_child_stacks = off", "off"),
     (("--expiry-child-stacks=auto",), "expiry_child_stacks = off", "auto")],
)  # fmt: skip
def test_child_stacks_come_from_the_option_else_the_ini_else_auto(
    pytester: pytest.Pytester, arguments: tuple[str, ...], ini: str, expected: str
) -> None:
    assert settings_of(pytester, *arguments, ini=ini).child_stacks == expected


@pytest.mark.parametrize(("text", "value"), [("yes", True), ("1", True), ("no", False)])
def test_yes_no_ini_values_read_as_pytest_reads_a_bool(
    pytester: pytest.Pytester, text: str, value: bool
) -> None:
    settings = settings_of(pytester, ini=f"expiry_func_only = {text}")
    assert settings.func_only is value


def test_the_scale_never_takes_a_deadline_below_1_ms_nor_past_a_billion_seconds(
    pytester: pytest.Pytester,
) -> None:
    small = settings_of(
        pytester, "--expiry=0.01", "--expiry-scale=0.01", "--expiry-session=1", "--expiry-exit=0.05"
    )
    assert small.session == 0.01
    assert small.collect == small.exit == MIN_SECONDS
    assert deadline_of(settings=small) == (MIN_SECONDS, False)
    big = settings_of(pytester, "--expiry=1e7", "--expiry-scale=100", "--expiry-exit=1e7")
    assert big.exit == big.collect == deadline_of(settings=big)[0] == 1e9


# --- item_deadline: markers --------------------------------------------------------------


def test_an_item_without_markers_gets_the_session_default() -> None:
    settings = replace(DEFAULTS, default=7.0, func_only=True)
    assert deadline_of(settings=settings) == (7.0, True)


@pytest.mark.parametrize(
    ("marker", "expected"),
    [
        (mark("expires", 5), (5.0, False)),
        (mark("expires", 0.5), (0.5, False)),
        (mark("expires", seconds=5), (5.0, False)),
        (mark("expires", 5, func_only=True), (5.0, True)),
        (mark("expires", 0), (0.0, False)),
        (mark("expires", 0.001), (0.001, False)),
        (mark("expires", 10**7), (1e7, False)),
        (mark("expires", None), (0.0, False)),
        (mark("timeout", 5), (5.0, False)),
        (mark("timeout", timeout=5), (5.0, False)),
        (mark("timeout", 5, method="thread"), (5.0, False)),
        (mark("timeout", 5, func_only=True), (5.0, True)),
    ],
    ids=str,
)
def test_a_valid_marker_gives_its_seconds_and_func_only(
    marker: pytest.Mark, expected: tuple[float, bool]
) -> None:
    assert deadline_of(marker) == expected


def test_a_marker_overrides_the_session_default() -> None:
    settings = replace(DEFAULTS, default=60.0)
    assert deadline_of(mark("expires", 1), settings=settings) == (1.0, False)


def test_a_marker_without_func_only_takes_the_session_func_only() -> None:
    settings = replace(DEFAULTS, func_only=True)
    assert deadline_of(mark("expires", 1), settings=settings) == (1.0, True)
    assert deadline_of(mark("expires", 1, func_only=False), settings=settings) == (1.0, False)


def test_the_scale_multiplies_markers_and_the_default() -> None:
    settings = replace(DEFAULTS, default=2.0, scale=3.0)
    assert deadline_of(settings=settings) == (6.0, False)
    assert deadline_of(mark("expires", 0.5), settings=settings) == (1.5, False)
    assert deadline_of(mark("expires", 0), settings=settings) == (0.0, False)


def test_a_marker_scaled_below_1_ms_gets_1_ms() -> None:
    settings = replace(DEFAULTS, scale=MIN_SCALE)
    assert deadline_of(mark("expires", 0.001), settings=settings) == (MIN_SECONDS, False)
    assert deadline_of(mark("expires", 0), settings=settings) == (0.0, False)


def test_expires_beats_timeout() -> None:
    assert deadline_of(mark("expires", 1), mark("timeout", 9)) == (1.0, False)


def test_the_timeout_marker_is_ignored_without_timeout_compat() -> None:
    settings = replace(DEFAULTS, default=4.0, timeout_compat=False)
    assert deadline_of(mark("timeout", 1), settings=settings) == (4.0, False)


def test_a_bad_timeout_marker_is_ignored_without_timeout_compat() -> None:
    settings = replace(DEFAULTS, timeout_compat=False)
    assert deadline_of(mark("timeout", "abc"), settings=settings) == (0.0, False)


@pytest.mark.parametrize(
    ("marker", "names"),
    [
        (mark("expires", "10s"), ["'10s'", SECONDS]),
        (mark("expires", 1e-300), ["(1e-300)", SECONDS]),
        (mark("expires", 0.0009), ["(0.0009)", SECONDS]),
        (mark("expires", 10**7 + 1), ["(10000001)", SECONDS]),
        (mark("expires", 1e308), ["(1e+308)", SECONDS]),
        (mark("timeout", 1e-300), ["@pytest.mark.timeout(1e-300)", SECONDS]),
        (mark("expires"), ["@pytest.mark.expires()", "expected @pytest.mark.expires(seconds"]),
        (mark("expires", 1, 2), ["@pytest.mark.expires(1, 2)", "expected"]),
        (mark("expires", 1, seconds=2), ["@pytest.mark.expires(1, seconds=2)", "expected"]),
        (mark("expires", -1), ["(-1)", SECONDS]),
        (mark("expires", float("nan")), ["(nan)", SECONDS]),
        (mark("expires", float("inf")), ["(inf)", SECONDS]),
        (mark("expires", True), ["(True)", SECONDS]),
        (mark("expires", [1]), ["([1])", SECONDS]),
        (mark("expires", 1, func_only="yes"), ["'yes'", "func_only must be True or False"]),
        (mark("expires", 1, bogus=1), ["bogus=1", "expected @pytest.mark.expires(seconds"]),
        (mark("expires", 1, method="thread"), ["method='thread'", "expected"]),
        (mark("timeout", "abc"), ["@pytest.mark.timeout('abc')", "timeout must be"]),
        (mark("timeout", 1, bogus=1), ["@pytest.mark.timeout(1, bogus=1)", "expected"]),
    ],
    ids=str,
)
def test_a_marker_with_bad_arguments_is_an_error_naming_them_and_what_is_allowed(
    marker: pytest.Mark, names: list[str]
) -> None:
    with pytest.raises(MarkerError) as error:
        deadline_of(marker)
    assert f"@pytest.mark.{marker.name}" in str(error.value)
    for name in names:
        assert name in str(error.value)


def test_a_marker_with_a_huge_integer_is_a_marker_error() -> None:
    with pytest.raises(MarkerError):
        deadline_of(mark("expires", 10**400))


scalars = (
    st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
    | st.none()
    | st.booleans()
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
keywords = st.sampled_from(["seconds", "timeout", "func_only", "method", "bogus"]) | st.from_regex(
    r"[a-z_]{1,8}", fullmatch=True
)


@given(
    name=st.sampled_from(["expires", "timeout"]),
    args=st.lists(values, max_size=3),
    kwargs=st.dictionaries(keywords, values, max_size=3),
    scale=st.sampled_from([MIN_SCALE, 0.5, 1.0, 3.0, MAX_SCALE]),
)
def test_any_marker_gives_a_finite_deadline_or_a_marker_error_naming_the_marker(
    name: str, args: list[Any], kwargs: dict[str, Any], scale: float
) -> None:
    marker = mark(name, *args, **kwargs)
    try:
        result = deadline_of(marker, settings=replace(DEFAULTS, scale=scale))
    except MarkerError as error:
        assert f"@pytest.mark.{name}" in str(error)
    else:
        value, func_only = result
        assert isinstance(value, float)
        assert value == 0 or MIN_SECONDS <= value <= MAX_SECONDS * MAX_SCALE
        assert isinstance(func_only, bool)


MARKED_AT_EVERY_LEVEL = """
import pytest

pytestmark = [pytest.mark.expires(30), pytest.mark.timeout(40)]

def test_module_markers(): pass

@pytest.mark.timeout(3)
def test_own_timeout_under_a_module_expires(): pass

@pytest.mark.expires(4)
@pytest.mark.expires(5)
def test_two_of_its_own(): pass

@pytest.mark.expires(6)
class TestClass:
    def test_class_marker(self): pass

    @pytest.mark.expires(7)
    def test_own_beats_class(self): pass

    @pytest.mark.parametrize("n", [1, 2])
    def test_parametrized(self, n): pass

class TestUnmarked:
    def test_module_marker_through_a_class(self): pass
"""


@pytest.mark.parametrize("compat", [True, False], ids=["with-timeout-compat", "expires-only"])
def test_markers_found_over_many_items_are_those_pytest_calls_closest(
    pytester: pytest.Pytester, compat: bool
) -> None:
    """Collecting a session's deadlines remembers each module's and class's markers; every
    item still gets what looking its own markers up one by one would give."""
    pytester.makepyfile(test_marked=MARKED_AT_EVERY_LEVEL)
    items = pytester.getitems(pytester.path / "test_marked.py")
    settings = replace(DEFAULTS, timeout_compat=compat)
    seen: dict[int, dict[str, pytest.Mark]] = {}
    remembered = {item.nodeid: item_deadline(item, settings, seen) for item in items}
    one_by_one = {item.nodeid: item_deadline(item, settings) for item in items}
    assert remembered == one_by_one
    expected = {
        "test_module_markers": 30.0,
        "test_own_timeout_under_a_module_expires": 30.0,  # any expires beats any timeout
        "test_two_of_its_own": 5.0,  # the one nearest the function, as get_closest_marker
        "test_class_marker": 6.0,
        "test_own_beats_class": 7.0,
        "test_parametrized[1]": 6.0,
        "test_parametrized[2]": 6.0,
        "test_module_marker_through_a_class": 30.0,
    }
    assert {item.name: remembered[item.nodeid][0] for item in items} == expected
    for item in items:
        marker = item.get_closest_marker("expires")
        assert marker is not None and remembered[item.nodeid][0] == marker.args[0]
