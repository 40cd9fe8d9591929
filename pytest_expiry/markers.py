"""The ``expires`` marker and pytest-timeout's ``timeout`` marker: their forms, checked.

``@pytest.mark.expires(seconds, *, func_only=False)``: one deadline, 0 or ``None`` disables.
``@pytest.mark.timeout(timeout=None, method=None, *, func_only=None)``, pytest-timeout's: the
deadline may be a string of a number, ``None`` (or none given) keeps the default deadline, and
``method`` must be one of pytest-timeout's (it changes nothing here). A marker that is not one
of these forms raises :class:`MarkerError`, whose message names the marker as written.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from pytest_expiry import timeout_compat
from pytest_expiry.options import SECONDS_HELP, deadline_ok

__all__ = ["MarkerError", "marker_seconds"]


class MarkerError(Exception):
    """A marker's arguments are not a valid deadline."""


_USAGE = {
    "seconds": "@pytest.mark.expires(seconds, *, func_only=False)",
    "timeout": "@pytest.mark.timeout(timeout=None, method=None, *, func_only=None)",
}


def marker_seconds(marker: pytest.Mark, keyword: str) -> tuple[float | None, bool | None]:
    """``(seconds, func_only)`` from an ``expires`` or a ``timeout`` marker. ``seconds`` is
    None for pytest-timeout's forms that keep the default deadline (``timeout(None)``,
    ``timeout(func_only=True)``); its ``timeout`` may also be a string of a number."""
    value, func_only = _marker_arguments(marker, keyword)
    if value is None:
        return (0.0 if keyword != "timeout" else None), _checked_flag(marker, func_only)
    if keyword == "timeout" and isinstance(value, str):
        value = _number_or_text(value)
    try:
        valid = not isinstance(value, bool) and math.isfinite(value) and deadline_ok(value)
    except (TypeError, OverflowError):  # not a number, or an int too large for a float
        valid = False
    if not valid:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        raise MarkerError(f"@pytest.mark.{marker.name}({shown}): {keyword} must be {SECONDS_HELP}")
    return float(value), _checked_flag(marker, func_only)


def _marker_arguments(marker: pytest.Mark, keyword: str) -> tuple[Any, Any]:
    """The deadline given (None when none is) and ``func_only``, checked for their shape."""
    timeout = keyword == "timeout"
    allowed = {keyword, "func_only"} | ({"method"} if timeout else set())
    args = list(marker.args)
    if keyword in marker.kwargs:
        args.insert(0, marker.kwargs[keyword])
    if set(marker.kwargs) - allowed or not _shape_ok(marker, keyword, len(args)):
        raise MarkerError(
            f"@pytest.mark.{marker.name}{_call_text(marker)}: expected {_USAGE[keyword]}"
        )
    if timeout:
        problem = timeout_compat.marker_method_error(marker)
        if problem:
            raise MarkerError(f"@pytest.mark.{marker.name}{_call_text(marker)}: {problem}")
    return (args[0] if args else None), marker.kwargs.get("func_only")


def _shape_ok(marker: pytest.Mark, keyword: str, given: int) -> bool:
    """``expires`` takes one deadline; ``timeout`` takes at most a deadline and a method, at
    least one argument of any kind, and its deadline once."""
    if keyword != "timeout":
        return given == 1
    if not marker.args and not marker.kwargs:
        return False
    if keyword in marker.kwargs and marker.args:
        return False  # the deadline twice: positional and keyword
    return given <= (1 if "method" in marker.kwargs else 2)


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _checked_flag(marker: pytest.Mark, func_only: Any) -> bool | None:
    if func_only is not None and not isinstance(func_only, bool):
        raise MarkerError(
            f"@pytest.mark.{marker.name}: func_only must be True or False, not {func_only!r}"
        )
    return func_only


def _call_text(marker: pytest.Mark) -> str:
    parts = [repr(a) for a in marker.args] + [f"{k}={v!r}" for k, v in marker.kwargs.items()]
    return f"({', '.join(parts)})"
