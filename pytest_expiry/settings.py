"""Turning options, ini values, environment variables and markers into deadlines.

Precedence for a test's deadline: ``@pytest.mark.expires`` > ``@pytest.mark.timeout`` >
``--expiry`` > ``--timeout`` > ``PYTEST_EXPIRY`` > ``PYTEST_TIMEOUT`` > ini ``expiry`` > ini
``timeout``. The ``timeout`` spellings are pytest-timeout's; they count only while
pytest-timeout is not installed and the compatibility switch is on. A value of 0 disables.

Every bad value is reported by naming where it came from, what it was, and what is allowed.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pytest

from pytest_expiry import leaks

__all__ = [
    "MarkerError",
    "Settings",
    "fraction",
    "item_deadline",
    "positive",
    "seconds",
    "timeout_compat_possible",
]

_SECONDS_HELP = "a number of seconds >= 0 (0 disables)"


def _number(text: str, allowed: str, accept: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not accept(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}")
    return value


def seconds(text: str) -> float:
    """A deadline or duration: a finite number >= 0."""
    return _number(text, _SECONDS_HELP, lambda v: v >= 0)


def positive(text: str) -> float:
    """A scale factor: a finite number > 0."""
    return _number(text, "a number > 0", lambda v: v > 0)


def fraction(text: str) -> float:
    """The SLOW threshold: a fraction of the deadline, 0 <= f < 1 (0 disables)."""
    return _number(
        text,
        "a fraction of the deadline, at least 0 and below 1 (0 disables)",
        lambda v: 0 <= v < 1,
    )


def timeout_compat_possible() -> bool:
    """pytest-timeout's spellings are ours to honour only while it is not installed."""
    try:
        metadata.distribution("pytest-timeout")
    except metadata.PackageNotFoundError:
        return True
    return False


@dataclass(frozen=True)
class Settings:
    """The session's resolved expiry settings."""

    default: float
    grace: float
    scale: float
    func_only: bool
    slow: float
    report: str | None
    timeout_compat: bool
    collect: float
    exit: float
    session: float
    leaks: str

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        compat = timeout_compat_possible() and _flag(config, "expiry_timeout_compat", True)
        default = _default_seconds(config, compat)
        scale = _value(config, "expiry_scale", positive, 1.0)
        return cls(
            default=default,
            grace=_value(config, "expiry_grace", seconds, 2.0),
            scale=scale,
            func_only=_flag(config, "expiry_func_only", False),
            slow=_value(config, "expiry_slow", fraction, 0.5),
            report=config.getoption("expiry_report") or config.getini("expiry_report") or None,
            timeout_compat=compat,
            collect=_value(config, "expiry_collect", seconds, default) * scale,
            exit=_value(config, "expiry_exit", seconds, 10.0 if default else 0.0) * scale,
            session=_value(config, "expiry_session", seconds, 0.0) * scale,
            leaks=_leak_mode(config),
        )


def _checked(where: str, text: str, parse: Any) -> float:
    try:
        value: float = parse(text)
    except argparse.ArgumentTypeError as error:
        raise pytest.UsageError(f"{where}: {error}") from None
    return value


def _value(config: pytest.Config, name: str, parse: Any, default: float) -> float:
    option = config.getoption(name)
    if option is not None:
        return float(option)
    ini = config.getini(name)
    return _checked(f"ini option {name} = {ini}", ini, parse) if ini else default


def _leak_mode(config: pytest.Config) -> str:
    mode = config.getoption("expiry_leaks") or str(config.getini("expiry_leaks")).strip()
    if not mode:
        return "kill" if leaks.supported() else "off"
    if mode not in leaks.LEAK_MODES:
        raise pytest.UsageError(
            f"ini option expiry_leaks = {mode}: expected one of {', '.join(leaks.LEAK_MODES)}"
        )
    return mode if leaks.supported() else "off"


def _flag(config: pytest.Config, name: str, default: bool) -> bool:
    option = config.getoption(name)
    if option is not None:
        return bool(option)
    ini = str(config.getini(name)).strip().lower()
    if not ini:
        return default
    if ini in ("1", "true", "yes", "on"):
        return True
    if ini in ("0", "false", "no", "off"):
        return False
    raise pytest.UsageError(f"ini option {name} = {ini}: expected true or false")


def _default_seconds(config: pytest.Config, compat: bool) -> float:
    sources: list[tuple[str, Any]] = [("--expiry", config.getoption("expiry"))]
    if compat:
        sources.append(("--timeout", config.getoption("timeout", None)))
    for variable in ("PYTEST_EXPIRY", "PYTEST_TIMEOUT") if compat else ("PYTEST_EXPIRY",):
        sources.append((f"environment variable {variable}", os.environ.get(variable)))
    sources.append(("ini option expiry", config.getini("expiry")))
    if compat:
        sources.append(("ini option timeout", config.getini("timeout")))
    chosen: float | None = None
    for where, value in sources:  # every source given is checked, even one that is overridden
        if isinstance(value, float):
            parsed = value
        elif value is not None and str(value).strip() != "":
            parsed = _checked(f"{where} = {value}", str(value).strip(), seconds)
        else:
            continue
        chosen = parsed if chosen is None else chosen
    return chosen or 0.0


class MarkerError(Exception):
    """A marker's arguments are not a valid deadline."""


def _marker_seconds(marker: pytest.Mark, keyword: str) -> tuple[float, bool | None]:
    allowed = {keyword, "func_only"} | ({"method"} if keyword == "timeout" else set())
    unknown = set(marker.kwargs) - allowed
    args = list(marker.args)
    if keyword in marker.kwargs:
        args.insert(0, marker.kwargs[keyword])
    usage = f"@pytest.mark.{marker.name}({keyword}, *, func_only=False)"
    if unknown or len(args) != 1:
        raise MarkerError(f"@pytest.mark.{marker.name}{_call_text(marker)}: expected {usage}")
    value, func_only = args[0], marker.kwargs.get("func_only")
    if value is None:
        value = 0
    try:
        valid = not isinstance(value, bool) and math.isfinite(value) and value >= 0
    except (TypeError, OverflowError):  # not a number, or an int too large for a float
        valid = False
    if not valid:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        raise MarkerError(f"@pytest.mark.{marker.name}({shown}): {keyword} must be {_SECONDS_HELP}")
    if func_only is not None and not isinstance(func_only, bool):
        raise MarkerError(
            f"@pytest.mark.{marker.name}: func_only must be True or False, not {func_only!r}"
        )
    return float(value), func_only


def _call_text(marker: pytest.Mark) -> str:
    parts = [repr(a) for a in marker.args] + [f"{k}={v!r}" for k, v in marker.kwargs.items()]
    return f"({', '.join(parts)})"


def item_deadline(
    item: pytest.Item, settings: Settings, seen: dict[int, dict[str, pytest.Mark]] | None = None
) -> tuple[float, bool]:
    """``(seconds, func_only)`` for ``item``, scaled; 0 seconds means no deadline.

    ``seen`` remembers the markers of the modules and classes already looked at, for calls
    over many items. Raises MarkerError for a marker whose arguments are not a valid deadline.
    """
    names = ("expires", "timeout") if settings.timeout_compat else ("expires",)
    closest = _closest_markers(item, names, {} if seen is None else seen)
    for name in names:
        marker = closest.get(name)
        if marker is not None:
            value, func_only = _marker_seconds(marker, "seconds" if name == "expires" else name)
            chosen = settings.func_only if func_only is None else func_only
            return value * settings.scale, chosen
    return settings.default * settings.scale, settings.func_only


def _closest_markers(
    node: Any, names: tuple[str, ...], seen: dict[int, dict[str, pytest.Mark]]
) -> dict[str, pytest.Mark]:
    """The marker of each name in ``names`` closest to ``node`` (what
    ``node.get_closest_marker`` returns), remembering each parent's in ``seen``."""
    parent = node.parent
    inherited: dict[str, pytest.Mark] = {}
    if parent is not None:
        known = seen.get(id(parent))
        inherited = known if known is not None else _closest_markers(parent, names, seen)
    own: dict[str, pytest.Mark] = {}
    for mark in node.own_markers:
        if mark.name in names:
            own.setdefault(mark.name, mark)
    found = {**inherited, **own} if own else inherited
    if not isinstance(node, pytest.Item):
        seen[id(node)] = found
    return found
