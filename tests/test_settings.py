"""Parsing of option values and of markers into deadlines (``pytest_expiry.settings``).

The three parsers are argparse ``type=`` functions: they return a finite float or raise
``argparse.ArgumentTypeError`` naming the value and what is allowed. ``item_deadline`` turns
an item's ``expires`` (or pytest-timeout's ``timeout``) marker into ``(seconds, func_only)``
or raises ``MarkerError`` naming the marker.
"""

from __future__ import annotations

import argparse
import math
import warnings
from dataclasses import fields, replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_expiry.settings import (
    MarkerError,
    Settings,
    fraction,
    item_deadline,
    positive,
    seconds,
)

_WITHOUT_OPTIONS = {
    "default": 0.0, "grace": 2.0, "scale": 1.0, "func_only": False, "slow": 0.5,
    "report": None, "timeout_compat": True,
}  # fmt: skip
DEFAULTS = Settings(**{f.name: _WITHOUT_OPTIONS.get(f.name, 0.0) for f in fields(Settings)})
"""The settings of a session without options: no default deadline; every other bound
(collection, exit, session...) 0, which turns it off."""

BAD_NUMBERS = ["abc", "", " ", "nan", "NaN", "inf", "-inf", "infinity", "1e400", "10s", "1,5"]


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
        return getattr(pytest.mark, name).with_args(*args, **kwargs).mark


def deadline_of(*marks: pytest.Mark, settings: Settings = DEFAULTS) -> tuple[float, bool]:
    return item_deadline(FakeItem(*marks), settings)  # type: ignore[arg-type]


# --- seconds: a deadline or a duration ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0.0), ("1", 1.0), ("0.25", 0.25), (" 2 ", 2.0), ("1e3", 1000.0), ("-0", 0.0)],
)
def test_seconds_accepts_finite_numbers_from_zero(text, value):
    assert seconds(text) == value


@pytest.mark.parametrize("text", [*BAD_NUMBERS, "-1", "-0.001"])
def test_seconds_rejects_non_numbers_negatives_and_non_finite_values(text):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        seconds(text)
    assert repr(text) in str(error.value)
    assert "a number of seconds >= 0 (0 disables)" in str(error.value)


# --- positive: a scale factor ------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("1", 1.0), ("3", 3.0), ("0.5", 0.5), ("1e-9", 1e-9)])
def test_positive_accepts_finite_numbers_above_zero(text, value):
    assert positive(text) == value


@pytest.mark.parametrize("text", [*BAD_NUMBERS, "0", "-0", "0.0", "-1"])
def test_positive_rejects_zero_negatives_and_non_finite_values(text):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        positive(text)
    assert repr(text) in str(error.value)
    assert "a number > 0" in str(error.value)


# --- fraction: the SLOW threshold --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"), [("0", 0.0), ("0.5", 0.5), ("0.3", 0.3), ("0.999", 0.999)]
)
def test_fraction_accepts_zero_up_to_but_excluding_one(text, value):
    assert fraction(text) == value


@pytest.mark.parametrize("text", [*BAD_NUMBERS, "1", "1.0", "2", "-0.1"])
def test_fraction_rejects_one_and_more_negatives_and_non_finite_values(text):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        fraction(text)
    assert repr(text) in str(error.value)
    assert "a fraction of the deadline" in str(error.value)


@given(st.text())
def test_seconds_of_any_text_is_a_finite_non_negative_float_or_names_the_text(text):
    try:
        value = seconds(text)
    except argparse.ArgumentTypeError as error:
        assert repr(text) in str(error)
    else:
        assert isinstance(value, float)
        assert math.isfinite(value)
        assert value >= 0


# --- item_deadline: markers --------------------------------------------------------------


def test_an_item_without_markers_gets_the_session_default():
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
        (mark("expires", None), (0.0, False)),
        (mark("timeout", 5), (5.0, False)),
        (mark("timeout", timeout=5), (5.0, False)),
        (mark("timeout", 5, method="thread"), (5.0, False)),
        (mark("timeout", 5, func_only=True), (5.0, True)),
    ],
    ids=str,
)
def test_a_valid_marker_gives_its_seconds_and_func_only(marker, expected):
    assert deadline_of(marker) == expected


def test_a_marker_overrides_the_session_default():
    settings = replace(DEFAULTS, default=60.0)
    assert deadline_of(mark("expires", 1), settings=settings) == (1.0, False)


def test_a_marker_without_func_only_takes_the_session_func_only():
    settings = replace(DEFAULTS, func_only=True)
    assert deadline_of(mark("expires", 1), settings=settings) == (1.0, True)
    assert deadline_of(mark("expires", 1, func_only=False), settings=settings) == (1.0, False)


def test_the_scale_multiplies_markers_and_the_default():
    settings = replace(DEFAULTS, default=2.0, scale=3.0)
    assert deadline_of(settings=settings) == (6.0, False)
    assert deadline_of(mark("expires", 0.5), settings=settings) == (1.5, False)
    assert deadline_of(mark("expires", 0), settings=settings) == (0.0, False)


def test_expires_beats_timeout():
    assert deadline_of(mark("expires", 1), mark("timeout", 9)) == (1.0, False)


def test_the_timeout_marker_is_ignored_without_timeout_compat():
    settings = replace(DEFAULTS, default=4.0, timeout_compat=False)
    assert deadline_of(mark("timeout", 1), settings=settings) == (4.0, False)


def test_a_bad_timeout_marker_is_ignored_without_timeout_compat():
    settings = replace(DEFAULTS, timeout_compat=False)
    assert deadline_of(mark("timeout", "abc"), settings=settings) == (0.0, False)


@pytest.mark.parametrize(
    ("marker", "names"),
    [
        (mark("expires", "10s"), ["'10s'", "a number of seconds >= 0"]),
        (mark("expires"), ["@pytest.mark.expires()", "expected @pytest.mark.expires(seconds"]),
        (mark("expires", 1, 2), ["@pytest.mark.expires(1, 2)", "expected"]),
        (mark("expires", 1, seconds=2), ["@pytest.mark.expires(1, seconds=2)", "expected"]),
        (mark("expires", -1), ["(-1)", "a number of seconds >= 0"]),
        (mark("expires", float("nan")), ["(nan)", "a number of seconds >= 0"]),
        (mark("expires", float("inf")), ["(inf)", "a number of seconds >= 0"]),
        (mark("expires", True), ["(True)", "a number of seconds >= 0"]),
        (mark("expires", [1]), ["([1])", "a number of seconds >= 0"]),
        (mark("expires", 1, func_only="yes"), ["'yes'", "func_only must be True or False"]),
        (mark("expires", 1, bogus=1), ["bogus=1", "expected @pytest.mark.expires(seconds"]),
        (mark("expires", 1, method="thread"), ["method='thread'", "expected"]),
        (mark("timeout", "abc"), ["@pytest.mark.timeout('abc')", "timeout must be"]),
        (mark("timeout", 1, bogus=1), ["@pytest.mark.timeout(1, bogus=1)", "expected"]),
    ],
    ids=str,
)
def test_a_marker_with_bad_arguments_is_an_error_naming_them_and_what_is_allowed(marker, names):
    with pytest.raises(MarkerError) as error:
        deadline_of(marker)
    assert f"@pytest.mark.{marker.name}" in str(error.value)
    for name in names:
        assert name in str(error.value)


def test_a_marker_with_a_huge_integer_is_a_marker_error():
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
    scale=st.sampled_from([1.0, 3.0, 0.5]),
)
def test_any_marker_gives_a_finite_deadline_or_a_marker_error_naming_the_marker(
    name, args, kwargs, scale
):
    marker = mark(name, *args, **kwargs)
    try:
        result = deadline_of(marker, settings=replace(DEFAULTS, scale=scale))
    except MarkerError as error:
        assert f"@pytest.mark.{name}" in str(error)
    else:
        value, func_only = result
        assert isinstance(value, float)
        assert math.isfinite(value)
        assert value >= 0
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
def test_markers_found_over_many_items_are_those_pytest_calls_closest(pytester, compat):
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
