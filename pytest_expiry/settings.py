"""Turning options, ini values, environment variables and markers into settings.

Precedence for a test's deadline: ``@pytest.mark.expires`` > ``@pytest.mark.timeout`` >
``--expiry`` > ``--timeout`` > ``PYTEST_EXPIRY`` > ``PYTEST_TIMEOUT`` > ini ``expiry`` > ini
``timeout``. The ``timeout`` spellings are pytest-timeout's; they count only while
pytest-timeout is not installed and the compatibility switch is on. A value of 0 disables.

Every source obeys the same limits (:mod:`pytest_expiry.options`); a positive deadline that
the scale takes below 1 ms is 1 ms. The JSON report's path is checked at start-up. Every bad
value is a ``pytest.UsageError`` (exit code 4) naming where it came from, what it was, and
what is allowed: none surfaces later, as a traceback or a deadline that cannot be met.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest

from pytest_expiry import timeout_compat
from pytest_expiry.leaks import processes as leaks
from pytest_expiry.markers import MarkerError, marker_seconds
from pytest_expiry.options import (
    CHILD_STACKS,
    MIN_SECONDS,
    checked,
    factor,
    fraction,
    grace,
    learn_factor,
    learn_min,
    report_path,
    seconds,
)

__all__ = [
    "MarkerError",
    "Settings",
    "configured_source",
    "item_deadline",
]


def _scaled(value: float, scale: float) -> float:
    """``value * scale``, never below :data:`MIN_SECONDS` unless ``value`` is 0 (off)."""
    return max(value * scale, MIN_SECONDS) if value else 0.0


@dataclass(frozen=True, eq=False)  # never compared; eq and hash cost start-up time
class Settings:
    """The session's resolved expiry settings; the deadlines of ``collect``, ``exit`` and
    ``session`` are already scaled, ``default`` is not (see :func:`item_deadline`)."""

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
    """``warn`` (the default on Linux), ``kill``, ``fail`` or ``off`` (always, elsewhere)."""
    child_stacks: str
    """One of :data:`CHILD_STACKS` (default ``auto``)."""
    default_source: str = ""
    """Where ``default`` came from: ``option``, ``env``, ``ini``, or ``""`` (none given)."""
    learn: float = 0.0
    """``--expiry-learn``: 0 (off), or the factor of learned deadlines."""
    learn_min: float = 5.0
    """``--expiry-learn-min``: the least learned deadline, in seconds."""
    history: str | None = None
    """``--expiry-history``: the history file given, or ``None`` (pytest's cache)."""
    debugger_pause: bool = True
    """Whether a deadline stops while a debugger is attached (pytest-timeout's
    ``--timeout-disable-debugger-detection`` turns it off)."""
    header_notes: tuple[str, ...] = ()
    """Lines the session header adds: what pytest-timeout's spellings mean here."""
    conflict: str | None = None
    """A warning that another plugin enforces deadlines too (pytest-timeout), also in the
    header; repeated in the summary when ``-q`` hides the header."""

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Resolve every setting; raises ``pytest.UsageError`` for any bad value."""
        compat = timeout_compat.compat_possible(config.pluginmanager) and _flag(
            config, "expiry_timeout_compat", True
        )
        default, default_source = _default_seconds(config, compat)
        scale = _value(config, "expiry_scale", factor, 1.0)
        timeout_func_only = timeout_compat.func_only(config) if compat else None
        session = timeout_compat.session_seconds(config) if compat else 0.0
        return cls(
            default=default,
            grace=_value(config, "expiry_grace", grace, 2.0),
            scale=scale,
            func_only=_flag(config, "expiry_func_only", bool(timeout_func_only)),
            slow=_value(config, "expiry_slow", fraction, 0.5),
            report=_report(config),
            timeout_compat=compat,
            collect=_scaled(_value(config, "expiry_collect", seconds, default), scale),
            exit=_scaled(_value(config, "expiry_exit", seconds, 10.0 if default else 0.0), scale),
            session=_scaled(_value(config, "expiry_session", seconds, session), scale),
            leaks=_leak_mode(config),
            child_stacks=_choice(config, "expiry_child_stacks", CHILD_STACKS, "auto"),
            default_source=default_source,
            learn=_value(config, "expiry_learn", learn_factor, 0.0),
            learn_min=_value(config, "expiry_learn_min", learn_min, 5.0),
            history=_path(config, "expiry_history"),
            debugger_pause=timeout_compat.debugger_detection(config) if compat else True,
            header_notes=_header_notes(config, compat, default),
            conflict=None if compat else timeout_compat.both_enforce_warning(config, default),
        )


def _header_notes(config: pytest.Config, compat: bool, default: float) -> tuple[str, ...]:
    note = (
        timeout_compat.method_note(config)
        if compat
        else timeout_compat.both_enforce_warning(config, default)
    )
    return (note,) if note else ()


def _value(config: pytest.Config, name: str, parse: Any, default: float) -> float:
    option = config.getoption(name)
    if option is not None:
        return float(option)
    ini = str(config.getini(name)).strip()
    return float(checked(f"ini option {name} = {ini}", ini, parse)) if ini else default


def _report(config: pytest.Config) -> str | None:
    return _path(config, "expiry_report")


def _path(config: pytest.Config, name: str) -> str | None:
    """A file the session writes (the JSON report, the history), checked at start-up."""
    option = config.getoption(name)  # checked by argparse (report_path)
    if option:
        return str(option)
    ini = str(config.getini(name)).strip()
    return str(checked(f"ini option {name} = {ini}", ini, report_path)) or None


def _choice(config: pytest.Config, name: str, choices: tuple[str, ...], default: str) -> str:
    option = config.getoption(name)  # argparse has checked it against the choices
    if option:
        return str(option)
    ini = str(config.getini(name)).strip()
    if ini and ini not in choices:
        raise pytest.UsageError(f"ini option {name} = {ini}: expected one of {', '.join(choices)}")
    return ini or default


def _leak_mode(config: pytest.Config) -> str:
    """``warn`` unless told otherwise, where leaks can be watched (Linux); else ``off``. The
    mode given is checked even where it has no effect."""
    mode = _choice(config, "expiry_leaks", leaks.LEAK_MODES, "warn")
    return mode if leaks.supported() else "off"


def _flag(config: pytest.Config, name: str, default: bool) -> bool:
    option = config.getoption(name)
    if option is not None:
        return bool(option)
    try:
        ini = config.getini(name)  # declared with type="bool"
    except (ValueError, pytest.UsageError) as error:  # pytest < 9.2 raises ValueError
        raise pytest.UsageError(
            f"ini option {name}: {error}; expected true or false (or yes/no, on/off, 1/0)"
        ) from None
    return default if ini is None else bool(ini)


def _default_seconds(config: pytest.Config, compat: bool) -> tuple[float, str]:
    """The default deadline and where it came from (``option``, ``env``, ``ini``, or ``""``
    when no source gave one)."""
    sources: list[tuple[str, Any]] = [("--expiry", config.getoption("expiry"))]
    if compat:
        sources.append(("--timeout", config.getoption("timeout", None)))
    for variable in ("PYTEST_EXPIRY", "PYTEST_TIMEOUT") if compat else ("PYTEST_EXPIRY",):
        sources.append((f"environment variable {variable}", os.environ.get(variable)))
    sources.append(("ini option expiry", config.getini("expiry")))
    if compat:
        sources.append(("ini option timeout", config.getini("timeout")))
    chosen: float | None = None
    source = ""
    for where, value in sources:  # every source given is checked, even one that is overridden
        if isinstance(value, float):
            parsed = value
        elif value is not None and str(value).strip() != "":
            parsed = checked(f"{where} = {value}", str(value).strip(), seconds)
        else:
            continue
        if chosen is None:
            chosen, source = parsed, _SOURCE_KINDS[where.partition(" ")[0]]
    return chosen or 0.0, source if chosen else ""


_SOURCE_KINDS = {"--expiry": "option", "--timeout": "option", "environment": "env", "ini": "ini"}


def item_deadline(
    item: pytest.Item, settings: Settings, seen: dict[int, dict[str, pytest.Mark]] | None = None
) -> tuple[float, bool]:
    """``(seconds, func_only)`` for ``item``, scaled (never below 1 ms); 0 means no deadline.

    ``seen`` remembers the markers of the modules and classes already looked at, for calls
    over many items. Raises MarkerError for a marker whose arguments are not a valid deadline.
    """
    names = ("expires", "timeout") if settings.timeout_compat else ("expires",)
    closest = _closest_markers(item, names, {} if seen is None else seen)
    if closest:
        for name in names:
            marker = closest.get(name)
            if marker is not None:
                value, func_only = marker_seconds(marker, "seconds" if name == "expires" else name)
                chosen = settings.func_only if func_only is None else func_only
                value = settings.default if value is None else value
                return _scaled(value, settings.scale), chosen
    return _scaled(settings.default, settings.scale), settings.func_only


def configured_source(item: pytest.Item, settings: Settings) -> str:
    """Where :func:`item_deadline`'s answer for ``item`` comes from: ``marker`` (``expires``,
    or pytest-timeout's ``timeout``), else ``settings.default_source`` (``option``, ``env``,
    ``ini``), else ``none``."""
    names = ("expires", "timeout") if settings.timeout_compat else ("expires",)
    if any(item.get_closest_marker(name) is not None for name in names):
        return "marker"
    return settings.default_source or "none"


def _closest_markers(
    node: Any, names: tuple[str, ...], seen: dict[int, dict[str, pytest.Mark]]
) -> dict[str, pytest.Mark]:
    """The marker of each name in ``names`` closest to ``node`` (what
    ``node.get_closest_marker`` returns), remembering each parent's in ``seen``."""
    parent = node.parent
    inherited = _collector_markers(parent, names, seen) if parent is not None else {}
    own = _own_markers(node, names)
    return {**inherited, **own} if own else inherited


def _collector_markers(
    node: Any, names: tuple[str, ...], seen: dict[int, dict[str, pytest.Mark]]
) -> dict[str, pytest.Mark]:
    """:func:`_closest_markers` of a collector (a module, a class), remembered in ``seen``."""
    found = seen.get(id(node))
    if found is None:
        found = seen[id(node)] = _closest_markers(node, names, seen)
    return found


def _own_markers(node: Any, names: tuple[str, ...]) -> dict[str, pytest.Mark]:
    own: dict[str, pytest.Mark] = {}
    for mark in node.own_markers:
        if mark.name in names:
            own.setdefault(mark.name, mark)
    return own
