"""Code that runs inside worker processes.

Every function is module level, so spawn and forkserver children can unpickle it, and this
module imports nothing heavier than the timer package, so children start fast. Nothing
here runs in the pytest process.
"""

from __future__ import annotations

import os
import time
from typing import Any

from pytest_expiry.timer import LocalTimerClient, TimerClient, clock, configure, expires

HANG = 30.0
"""How long a "stuck" worker sleeps: longer than any test waits, so only the timer ends it."""


def overrun(queue: Any, after: float, hang: float = HANG) -> None:
    """Arm a scope of ``after`` seconds and stay in it for ``hang`` seconds (by default
    longer than any test waits), then leave it and exit 0: an exit code of 0 means the
    timer never fired."""
    configure(LocalTimerClient(queue))
    with expires(after=after):
        time.sleep(hang)


def finish_then_linger(queue: Any, after: float, linger: float) -> None:
    """Leave a scope of ``after`` seconds at once, then stay alive past its old deadline."""
    configure(LocalTimerClient(queue))
    with expires(after=after):
        pass
    time.sleep(linger)


def overrun_reporting_deadline(queue: Any, after: float, deadline: Any, go: Any = None) -> None:
    """Overrun a scope of ``after`` seconds; report its deadline in ``deadline.value``.

    The reported deadline is ``clock() + after`` read just before entering the scope: a
    lower bound of the deadline ``expires`` arms, so a latency measured from it is an upper
    bound. With an event ``go``, the scope is entered inside an outer scope of ``HANG``
    seconds, once the parent has set ``go`` (after seeing the outer scope armed).
    """
    configure(LocalTimerClient(queue))
    if go is None:
        deadline.value = clock() + after
        with expires(after=after):
            time.sleep(HANG)
        return
    with expires(after=HANG):
        go.wait(HANG)
        deadline.value = clock() + after
        with expires(after=after):
            time.sleep(HANG)


def overrun_after_inner_scope(queue: Any, outer: float, inner: float) -> None:
    """Finish an inner unnamed scope, then overrun the outer unnamed scope around it."""
    configure(LocalTimerClient(queue))
    with expires(after=outer):
        with expires(after=inner):
            pass
        time.sleep(HANG)


def exit_inside_scope(queue: Any, after: float, go: Any) -> None:
    """Arm a scope, wait for the parent's go-ahead, and exit without releasing it."""
    configure(LocalTimerClient(queue))
    with expires(after=after):
        go.wait(HANG)
        os._exit(0)


def read_clock(reading: Any) -> None:
    """Report this process's :func:`clock` through a shared double."""
    reading.value = clock()


def arm_and_release(client: TimerClient, scope: str, expiration_time: float) -> None:
    """Use a client built by the parent (inherited through fork or pickled for spawn)."""
    client.acquire(scope, expiration_time)
    client.release(scope)


def put_all(queue: Any, items: list[Any]) -> None:
    """Put ``items`` and exit; exiting waits until all of them are written to the pipe."""
    for item in items:
        queue.put(item)


def freeze_holding_write_lock(queue: Any, after: float, go: Any) -> None:
    """Overrun a scope frozen at the worst moment: holding the queue's write lock.

    This is the state a worker is in when it hangs (GIL held in C code, say) while its
    queue's feeder thread is between taking the lock and releasing it around a send. The
    parent sets ``go`` once the server has this worker's timer.
    """
    configure(LocalTimerClient(queue))
    with expires(after=after):
        go.wait(HANG)
        queue._wlock.acquire()
        time.sleep(HANG)
