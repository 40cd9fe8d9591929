"""The test process's side of a scope: arming it, and raising ``Expired`` when told to.

One :class:`Guard` per test process. The per-test path is :meth:`Guard.arm` and
:meth:`Guard.release`: a write to the process's scope slot each (shared memory, read by the
watchdog when it wakes), and a check that the watchdog still holds its end. When the watchdog
sends the interrupt signal, the handler raises :class:`~pytest_expiry.Expired` in the main
thread, at the point where the test hangs, but only if the current scope really is past its
deadline and pytest is inside a test phase (never inside pytest's own reporting).
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from _pytest.runner import CallInfo

from pytest_expiry.channel import ChannelClient, ChannelError
from pytest_expiry.errors import Expired
from pytest_expiry.timer.api import clock

__all__ = ["ActiveScope", "Guard"]

_PHASE_CODE = CallInfo.from_call.__func__.__code__  # type: ignore[attr-defined]
_DEBUGGER_MODULES = ("bdb", "pdb", "pydevd", "_pydevd", "debugpy", "pudb", "IPython.core.debugger")


@dataclass(slots=True)
class ActiveScope:
    nodeid: str
    seconds: float
    armed_at: float
    deadline: float
    expired_in: str | None = None
    expired_after: float = 0.0
    expired_deadline: float = 0.0
    answer_on_expiry: bool = False
    owner: object = None  # what it was armed for (the item), for a cheap identity check


def _test_phase(frame: FrameType | None) -> str | None:
    """The phase ("setup", "call", "teardown") pytest is running at ``frame``, if any."""
    while frame is not None:
        if frame.f_code is _PHASE_CODE:
            return str(frame.f_locals.get("when"))
        frame = frame.f_back
    return None


_MONITORING: Any = getattr(sys, "monitoring", None)  # Python 3.12+: debuggers may use it


def debugger_active() -> bool:
    """True while pdb (or pydevd, debugpy, pudb...) is tracing this process."""
    tracer: Any = sys.gettrace()
    monitoring = _MONITORING
    if tracer is None and monitoring is None:
        return False  # the per-test fast path
    owner = getattr(tracer, "__self__", tracer)
    module = type(owner).__module__ if owner is not None else ""
    if module.startswith(_DEBUGGER_MODULES):
        return True
    return monitoring is not None and monitoring.get_tool(monitoring.DEBUGGER_ID) is not None


class Guard:
    """Arms and releases the current test's scope, and owns the interrupt handler."""

    def __init__(self, channel: ChannelClient, interrupt_signal: int, slow_fraction: float) -> None:
        self._channel: ChannelClient | None = channel
        self._slow_fraction = slow_fraction
        self.scope: ActiveScope | None = None
        self.broken: str | None = None
        self._paused_left: float | None = None
        self._paused_at = 0.0
        self._sending = False
        signal.signal(interrupt_signal, self._on_interrupt)

    def _publish(self, scope: ActiveScope | None) -> None:
        """Write ``scope`` (None: no scope) to the slot the watchdog reads."""
        if self._channel is None:
            return
        self._sending = True  # the handler must not interleave a write with this one
        try:
            if scope is not None:
                slow_at = scope.armed_at + self._slow_fraction * scope.seconds
                slow_at = slow_at if self._slow_fraction and slow_at > clock() else 0
                self._channel.arm(scope.nodeid, scope.deadline, slow_at, scope.armed_at)
            else:
                self._channel.disarm()
        except ChannelError as error:
            self._lose_channel(error)
        finally:
            self._sending = False

    def arm(
        self, nodeid: str, seconds: float, answer_on_expiry: bool = False, owner: object = None
    ) -> ActiveScope:
        """Start a scope of ``seconds`` for ``nodeid`` (replacing any earlier one).

        With ``answer_on_expiry`` the interrupt handler re-arms the scope (the watchdog's
        sign of life) before it raises, for scopes whose failure is formatted before the
        plugin gets control back (collection)."""
        now = clock()
        self.scope = ActiveScope(
            nodeid, seconds, now, now + seconds, answer_on_expiry=answer_on_expiry, owner=owner
        )
        if not debugger_active():
            self._check_alive()
            self._publish(self.scope)
        return self.scope

    def _check_alive(self) -> None:
        if self._channel is not None:
            try:
                self._channel.check_alive()
            except ChannelError as error:
                self._lose_channel(error)

    def _lose_channel(self, error: ChannelError) -> None:
        """The watchdog is gone: say why (the runner warns once), and stop writing to it."""
        self.broken = str(error)
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def rearm(self, seconds: float) -> None:
        """Give the current scope a fresh deadline (after an expiry, for what remains)."""
        if self.scope is not None:
            self.scope.deadline = clock() + seconds
            self._publish(self.scope)

    def release(self) -> None:
        if self.scope is not None:
            self.scope = None
            self._publish(None)

    @property
    def paused(self) -> bool:
        return self._paused_left is not None

    def pause(self) -> None:
        """A debugger took over: stop the clock of the current scope."""
        if self.scope is not None and self._paused_left is None:
            self._paused_at = clock()
            self._paused_left = max(0.0, self.scope.deadline - self._paused_at)
            self._publish(None)

    def resume(self) -> None:
        """The debugger is gone: the scope gets back the time it had left."""
        left, self._paused_left = self._paused_left, None
        if self.scope is not None and left is not None:
            self.scope.armed_at += clock() - self._paused_at  # debugging time is not the test's
            self.rearm(left)

    def await_event(self, scope: ActiveScope, timeout: float) -> dict[str, Any] | None:
        """The watchdog's account of the expiry that raised ``Expired`` in ``scope`` (the
        accounts of other escalations, answered without an exception, are skipped)."""
        if self._channel is None:
            return None
        end = clock() + timeout
        while (left := end - clock()) > 0:
            event = self._channel.receive_event(left)
            if event is None:
                return None
            if event.get("nodeid") == scope.nodeid and (
                event.get("deadline_at") == scope.expired_deadline
            ):
                return event
        return None

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """Raise ``Expired`` where the test hangs; or, where that cannot be done (inside
        pytest's own code, in a phase that already failed with ``Expired``, in a debugger),
        tell the watchdog that this process is alive, so that it is not killed."""
        __tracebackhide__ = True  # the failure points at the test's line, not at ours
        scope = self.scope
        if scope is None or clock() < scope.deadline:
            # a late signal, for a scope that has already ended: publish the current state
            # again, in case the watchdog acts on an older one
            if not self._sending and self._paused_left is None:
                self._publish(scope)
                self._wake()
            return
        if self._paused_left is not None:
            return  # in a debugger: the pause's release already answered the watchdog
        phase = _test_phase(frame)
        if phase is None or phase == scope.expired_in:
            if not self._sending:
                self.rearm(scope.seconds)
            return
        scope.expired_in = phase
        scope.expired_deadline = scope.deadline
        scope.expired_after = elapsed = clock() - scope.armed_at
        if scope.answer_on_expiry:
            self.rearm(scope.seconds)
        raise Expired(
            f"{scope.nodeid} expired: still running in {phase} after {elapsed:.2f} s "
            f"(deadline {round(scope.seconds, 3):g} s)"
        )

    def _wake(self) -> None:
        if self._channel is not None:
            try:
                self._channel.wake()
            except ChannelError as error:
                self._lose_channel(error)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
