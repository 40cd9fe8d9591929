"""The two signals the plugin uses, and delivering them to a process's main thread.

* the **stacks** signal makes a process dump every thread's stack (``faulthandler``, which
  works even while C code holds the GIL);
* the **interrupt** signal makes the test process raise :class:`~pytest_expiry.Expired`.

On Linux both are real-time signals near ``SIGRTMAX``, which test suites rarely use; elsewhere
``SIGUSR2`` and ``SIGUSR1``. ``PYTEST_EXPIRY_SIGNALS="STACKS,INTERRUPT"`` overrides both: each
a number or a name (``USR1``, ``SIGUSR2``, ``SIGRTMAX-2``, ``SIGRTMIN+3``). Only
``SIGUSR1``, ``SIGUSR2`` and the real-time signals are accepted: every other signal belongs to
pytest (``SIGINT`` is Ctrl-C), to the system (``SIGTERM``, ``SIGCHLD``, ``SIGPIPE``, the fault
and job-control signals...) or to what test suites commonly use (``SIGALRM``: pytest-timeout,
``signal.alarm``).
"""

from __future__ import annotations

import functools
import os
import re
import signal
import sys
from typing import Any, NamedTuple

__all__ = [
    "ExpirySignals",
    "default_signals",
    "parse_signals",
    "signal_main_thread",
    "usable_signals",
]

ENV_SIGNALS = "PYTEST_EXPIRY_SIGNALS"


class ExpirySignals(NamedTuple):
    stacks: int
    interrupt: int

    def encode(self) -> str:
        return f"{self.stacks},{self.interrupt}"


_REALTIME_NAME = re.compile(r"SIGRT(MIN|MAX)(?:\s*([+-])\s*(\d+))?")
_WHY = {
    "SIGINT": "Ctrl-C stops pytest with it",
    "SIGTERM": "it asks pytest to stop",
    "SIGALRM": "pytest-timeout and many test suites use it, through signal.alarm",
    "SIGKILL": "it cannot be caught",
    "SIGSTOP": "it cannot be caught",
}


def _realtime() -> range:
    low, high = getattr(signal, "SIGRTMIN", None), getattr(signal, "SIGRTMAX", None)
    return range(0) if low is None or high is None else range(int(low), int(high) + 1)


def usable_signals() -> frozenset[int]:
    """The signals the plugin may take: ``SIGUSR1``, ``SIGUSR2`` and the real-time ones."""
    return frozenset({int(signal.SIGUSR1), int(signal.SIGUSR2), *_realtime()})


def _usable_text() -> str:
    realtime = _realtime()
    if not realtime:
        return "SIGUSR1 or SIGUSR2"
    return (
        f"SIGUSR1, SIGUSR2 or a real-time signal (SIGRTMIN to SIGRTMAX, {realtime.start} to "
        f"{realtime.stop - 1} here; e.g. SIGRTMAX-2)"
    )


def _name_of(number: int) -> str:
    realtime = _realtime()
    if number in realtime and number not in (realtime.start, realtime.stop - 1):
        return f"SIGRTMIN+{number - realtime.start}"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _named(name: str) -> int | None:
    realtime = _REALTIME_NAME.fullmatch(name)
    if realtime is None:
        member = signal.Signals.__members__.get(name)
        return None if member is None else int(member)
    base = getattr(signal, f"SIGRT{realtime.group(1)}", None)
    if base is None:
        return None
    offset = int(realtime.group(3) or 0)
    return int(base) + (offset if realtime.group(2) == "+" else -offset)


def _signal_number(text: str) -> int:
    text = text.strip()
    if text.isascii() and text.isdigit():
        number: int | None = int(text)
    else:
        name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        number = _named(name)
    if number is None or number not in signal.valid_signals():
        raise ValueError(f"{text!r} is not a signal name or number on this platform")
    if number in usable_signals():
        return number
    name = _name_of(number)
    why = _WHY.get(name, "pytest, the system or test suites rely on it")
    raise ValueError(
        f"{text!r} is not free for pytest-expiry ({name}: {why}); use {_usable_text()}"
    )


def parse_signals(text: str) -> ExpirySignals:
    """Parse ``"STACKS,INTERRUPT"``: two different signals, each among
    :func:`usable_signals`. Raises ValueError naming the value that is wrong and saying which
    signals are fine."""
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"expected two signals separated by a comma, got {text!r}")
    stacks, interrupt = (_signal_number(part) for part in parts)
    if stacks == interrupt:
        raise ValueError("the stacks and interrupt signals must differ")
    return ExpirySignals(stacks, interrupt)


def default_signals() -> ExpirySignals:
    """The signals from ``PYTEST_EXPIRY_SIGNALS`` (ValueError if it is not valid, see
    :func:`parse_signals`), else the platform's defaults."""
    configured = os.environ.get(ENV_SIGNALS)
    if configured:
        return parse_signals(configured)
    rtmax = getattr(signal, "SIGRTMAX", None)
    if rtmax is not None:
        return ExpirySignals(stacks=int(rtmax) - 2, interrupt=int(rtmax) - 3)
    return ExpirySignals(stacks=int(signal.SIGUSR2), interrupt=int(signal.SIGUSR1))


@functools.cache
def _tgkill() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # noqa: PLC0415 - the watchdog's, not the test process's

    return getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)


def signal_main_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to the main thread of ``pid`` (Linux), or to the process elsewhere.

    Aiming at the main thread makes a blocking call there (sleep, lock, join, recv) return
    with EINTR, so that the Python handler runs at once. Raises ProcessLookupError when the
    process is gone.
    """
    tgkill = _tgkill()
    if tgkill is not None:
        if tgkill(pid, pid, signum) == 0:
            return
        import ctypes  # noqa: PLC0415

        errno = ctypes.get_errno()
        raise ProcessLookupError(errno, os.strerror(errno))
    os.kill(pid, signum)
