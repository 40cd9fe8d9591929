"""The two signals the plugin uses, and delivering them to a process's main thread.

* the **stacks** signal makes a process dump every thread's stack (``faulthandler``, which
  works even while C code holds the GIL);
* the **interrupt** signal makes the test process raise :class:`~pytest_expiry.Expired`.

On Linux both are real-time signals near ``SIGRTMAX``, which test suites rarely use; elsewhere
``SIGUSR2`` and ``SIGUSR1``. ``PYTEST_EXPIRY_SIGNALS="STACKS,INTERRUPT"`` (numbers or names)
overrides both.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, NamedTuple

__all__ = ["ExpirySignals", "default_signals", "parse_signals", "signal_main_thread"]

ENV_SIGNALS = "PYTEST_EXPIRY_SIGNALS"


class ExpirySignals(NamedTuple):
    stacks: int
    interrupt: int

    def encode(self) -> str:
        return f"{self.stacks},{self.interrupt}"


def _signal_number(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        number = int(text)
    else:
        name = text.upper() if text.upper().startswith("SIG") else "SIG" + text.upper()
        member = getattr(signal, name, None)
        if not isinstance(member, int):
            raise ValueError(f"{text!r} is not a signal name or number")
        number = int(member)
    if number not in signal.valid_signals() or number in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"signal {text!r} cannot be caught on this platform")
    return number


def parse_signals(text: str) -> ExpirySignals:
    """Parse ``"STACKS,INTERRUPT"``; raises ValueError naming what is wrong."""
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"expected two signals separated by a comma, got {text!r}")
    stacks, interrupt = (_signal_number(part) for part in parts)
    if stacks == interrupt:
        raise ValueError("the stacks and interrupt signals must differ")
    return ExpirySignals(stacks, interrupt)


def default_signals() -> ExpirySignals:
    """The signals from ``PYTEST_EXPIRY_SIGNALS``, else the platform's defaults."""
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
