"""The test process's side of a scope: the one owner of its lifecycle.

One :class:`ScopeGuard` per test process (per session: a nested in-process session gets its own,
and gives the process back to the outer one as it was). A scope goes

    armed -> expired(phase) -> answered -> released

and only the guard writes it. The per-test path is :meth:`ScopeGuard.arm_if_alive` and
:meth:`ScopeGuard.release`: a write to the process's scope slot each (shared memory, read by the
watchdog when it wakes). Which phase pytest is in is read from its runner's frames when the
interrupt arrives (or told by :meth:`ScopeGuard.enter_phase`: collection, and a test in
trouble, see :mod:`pytest_expiry.phases`). When the watchdog sends the interrupt signal, the
handler raises :class:`~pytest_expiry.Expired` in the main thread where the test hangs, if
the scope really is past its deadline and pytest is inside a phase. Otherwise it
*answers* (publishes the scope again, which tells the watchdog the process is alive): between
phases the expiry is kept pending, without moving the deadline, and raised as soon as the next
phase begins.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any, TypeVar

from pytest_expiry.asyncdelivery import deliver_into_loop
from pytest_expiry.clock import clock
from pytest_expiry.debugger import debugger_active
from pytest_expiry.errors import Expired
from pytest_expiry.protocol.accounts import await_account
from pytest_expiry.protocol.client import ChannelClient, ChannelError
from pytest_expiry.protocol.wire import EVENTS_NAME, MAX_PAYLOAD
from pytest_expiry.scopestate import ActiveScope

__all__ = ["ActiveScope", "ScopeGuard"]

_Result = TypeVar("_Result")

_PENDING_ANSWER = 1.0  # how long pytest may take to reach the next phase after a pending expiry


class ScopeGuard:
    """Arms and releases the current test's scope, and owns the interrupt handler."""

    def __init__(
        self,
        channel: ChannelClient,
        interrupt_signal: int,
        debugger_pause: bool = True,
    ) -> None:
        self._debugger_pause = debugger_pause  # False: a debugger does not stop the clock
        self._channel: ChannelClient | None = channel
        self._events_path = os.path.join(channel.directory, EVENTS_NAME)
        self.scope: ActiveScope | None = None
        self.phase: str | None = None  # told; when None, read from pytest's runner frames
        self.on_trouble: Callable[[ActiveScope], None] | None = None
        """Called when a scope expires, or its deadline passes between phases."""
        self.broken: str | None = None
        self._paused_left: float | None = None
        self._paused_at = 0.0
        self._sending = False
        self._signal = interrupt_signal
        self._previous: Any = signal.signal(interrupt_signal, self._on_interrupt)

    def _publish(self, scope: ActiveScope | None, deadline: float | None = None) -> None:
        """Write ``scope`` (None: no scope) to the slot the watchdog reads, with its own
        deadline or ``deadline``."""
        if self._channel is None:
            return
        self._sending = True  # the handler must not interleave a write with this one
        try:
            if scope is not None:
                published = scope.deadline if deadline is None else deadline
                # SLOW is told when the test ends (report.py), not by the watchdog meanwhile
                self._channel.arm(scope.nodeid, published, 0.0, scope.armed_at)
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
        if not (self._debugger_pause and debugger_active()):
            self._publish(self.scope)
        return self.scope

    def arm_if_alive(self, nodeid: str, seconds: float, owner: object) -> ActiveScope | None:
        """The per-test :meth:`arm`: done if the watchdog looks alive at a glance, else
        None, nothing armed (the caller runs :meth:`check_alive`, and arms after it)."""
        if self._channel is None or not self._channel.looks_alive():
            return None
        return self.arm(nodeid, seconds, owner=owner)

    def check_alive(self) -> None:
        """Find out whether the watchdog is still there (:attr:`broken` says why not)."""
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
        """End the current scope: the watchdog forgets it."""
        if self.scope is not None:
            self.scope.released = True
            self.scope = None
            self._publish(None)

    def answer(self) -> None:
        """Answer the watchdog after the scope expired in a phase: the process is alive and
        pytest has control again, so what remains of the test (reporting, teardown) gets a
        fresh deadline of the scope's length. Without an answer within the grace period
        the watchdog kills the process."""
        scope = self.scope
        if scope is not None:
            scope.answered = scope.expired_in is not None
            self.rearm(scope.seconds)

    def owned_by(self, owner: object) -> ActiveScope | None:
        """The current scope, if it was armed for ``owner``."""
        scope = self.scope
        return scope if scope is not None and scope.owner is owner else None

    def run_phase(self, phase: str) -> Generator[None, _Result, _Result]:
        """For a hook wrapper (``return (yield from guard.run_phase(phase))``): pytest runs
        ``phase`` of the scope's owner while this waits at its ``yield`` (see
        :meth:`enter_phase` and :meth:`leave_phase`)."""
        __tracebackhide__ = True
        self.enter_phase(phase)
        try:
            result = yield
        except BaseException:
            self.phase = None
            raise
        self.leave_phase()
        return result

    def enter_phase(self, phase: str) -> None:
        """pytest begins ``phase`` ("setup", "call", "teardown", "collect") of the scope's
        owner. A deadline that passed between phases expires here, before the phase runs;
        except teardown, which always runs (fixtures must be finalized), with a fresh
        deadline, and fails with the expiry once it is done (:meth:`leave_phase`)."""
        __tracebackhide__ = True
        self.phase = phase
        scope = self.scope
        if scope is None or not scope.pending or scope.expired_in is not None:
            return
        if phase == "teardown":
            scope.expired_deadline = scope.deadline
            self.rearm(scope.seconds)
            return
        scope.pending = False
        self._expire(scope, phase, f"its deadline passed before {phase} began")

    def leave_phase(self) -> None:
        """pytest ended the phase; raises the expiry kept pending through a teardown."""
        __tracebackhide__ = True
        phase, self.phase = self.phase, None
        scope = self.scope
        if scope is not None and scope.pending and scope.expired_in is None and phase:
            scope.pending = False
            self._expire(scope, phase, "its deadline passed before teardown began", late=True)

    @property
    def paused(self) -> bool:
        return self._paused_left is not None

    def pause(self) -> None:
        """A debugger took over: stop the clock of the current scope."""
        if self._debugger_pause and self.scope is not None and self._paused_left is None:
            self._paused_at = clock()
            self._paused_left = max(0.0, self.scope.deadline - self._paused_at)
            self._publish(None)

    def resume(self) -> None:
        """The debugger is gone: the scope gets back the time it had left."""
        left, self._paused_left = self._paused_left, None
        if self.scope is not None and left is not None:
            self.scope.armed_at += clock() - self._paused_at  # debugging time is not the test's
            self.rearm(left)

    def await_account(self, scope: ActiveScope, timeout: float) -> dict[str, Any] | None:
        """The watchdog's account of the expiry that raised ``Expired`` in ``scope``."""
        held = _slot_name(scope.nodeid)
        return await_account(
            self._channel, self._events_path, (scope.nodeid, held), scope.expired_deadline, timeout
        )

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """Raise ``Expired`` where the test hangs; or, where that cannot be done, answer the
        watchdog (publish the scope again), so that the process is not killed:

        * a late signal, for a scope that ended or was re-armed: publish the current state;
        * in a debugger: the pause already answered;
        * between phases: the expiry is pending (raised when the next phase begins) and the
          deadline stays where it was;
        * in a phase that already failed with ``Expired``: what remains gets a fresh
          deadline of the scope's length.
        """
        __tracebackhide__ = True  # the failure points at the test's line, not at ours
        scope = self.scope
        if scope is None or clock() < scope.deadline:
            if not self._sending and self._paused_left is None:
                self._publish(scope)
                self._wake()
            self._delegate(signum, frame)
            return
        if self._paused_left is not None:
            return
        phase = self.phase or _runtest_phase(frame, scope.owner)
        if phase is None:
            if scope.pending:
                return  # pytest itself hangs between phases: let the watchdog end it
            scope.pending = True
            self._in_trouble(scope)
            if not self._sending:
                self._publish(scope, clock() + _PENDING_ANSWER)
                self._wake()
            return
        if phase == scope.expired_in:
            if not self._sending:
                self.answer()
            return
        self._expire(scope, phase, f"still running in {phase}", frame=frame)

    def _expire(
        self,
        scope: ActiveScope,
        phase: str,
        how: str,
        late: bool = False,
        frame: FrameType | None = None,
    ) -> None:
        __tracebackhide__ = True
        scope.expired_in = phase
        if not late:  # a teardown run after a pending expiry had a fresh deadline
            scope.expired_deadline = scope.deadline
        scope.expired_after = elapsed = clock() - scope.armed_at
        if scope.answer_on_expiry:
            self.answer()
        self._in_trouble(scope)
        from pytest_expiry.record import after_text  # noqa: PLC0415 - when it expires

        error = Expired(f"{how} {after_text(elapsed, scope.seconds)}")
        if frame is not None and deliver_into_loop(error, frame, _file_of(scope.owner)):
            return  # the event loop raises it in the test's task, where that waits
        raise error

    def _in_trouble(self, scope: ActiveScope) -> None:
        if self.on_trouble is not None:
            self.on_trouble(scope)

    def _delegate(self, signum: int, frame: FrameType | None) -> None:
        """A nested in-process session's guard passes on a signal meant for the outer one."""
        outer = getattr(self._previous, "__self__", None)
        if isinstance(outer, ScopeGuard) and outer is not self:
            outer._on_interrupt(signum, frame)

    def _wake(self) -> None:
        if self._channel is not None:
            try:
                self._channel.wake()
            except ChannelError as error:
                self._lose_channel(error)

    def close(self) -> None:
        """End this guard: the interrupt signal goes back to whoever had it before (the outer
        session's guard, for a nested in-process session)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if signal.getsignal(self._signal) == self._on_interrupt:
            signal.signal(self._signal, self._previous)


def _runtest_phase(frame: FrameType | None, owner: object) -> str | None:
    if owner is None:
        return None
    from pytest_expiry._compat import runtest_phase  # noqa: PLC0415 - pytest, the rare path

    return runtest_phase(frame, owner)


def _file_of(owner: object) -> str:
    """The file that defines ``owner`` (a test item), as its code objects name it."""
    path = getattr(owner, "path", None)
    return str(path) if path is not None else ""


def _slot_name(nodeid: str) -> str:
    """``nodeid`` as the watchdog knows it: the slot holds at most ``MAX_PAYLOAD`` bytes."""
    return nodeid.encode()[:MAX_PAYLOAD].decode("utf-8", "replace")
