"""The channel between test processes and the watchdog: its layout, shared by both ends
(:mod:`~pytest_expiry.protocol.client` in each test process, :mod:`~pytest_expiry.protocol.server`
in the watchdog).

Everything lives in the session's directory, which only the session's user can enter (mode
0700); on Linux the watchdog also checks each peer's credentials (``SO_PEERCRED``).

* **The scope slot.** A test process publishes its current scope (the running test) in a
  small file of its own under ``scopes/``, mapped into memory by both sides. Arming and
  releasing a scope is a write to that memory: no system call, no message, and no work for
  the watchdog, which reads the slots when it wakes (at the next deadline it knows, and at
  least each ``DRAIN_INTERVAL``). A slot is a sequence lock: the writer makes the sequence
  number odd, writes, and makes it even again; the reader keeps what it read only if the
  number was even and unchanged around its read.
* **The stream socket** (``socket``): the ``HELLO`` frame that names the process and its
  slot (any other frame drops the peer); the watchdog sends escalation events back, one JSON
  object per line.
* **The answer.** While the watchdog escalates a process's expired scope, any write to
  that process's slot (a fresh deadline for what remains of the test, or a release) is its
  *answer*: the process is alive and pytest has control again, so the escalation stops short
  of the hard kill (:meth:`pytest_expiry.scope.ScopeGuard.answer` on this side,
  ``Escalation.answered`` on the watchdog's).
* **The wake socket** (``wake``, datagrams): a write whose deadline is nearer than
  ``URGENT_WITHIN``, or one that replaces a scope whose deadline has passed (an answer), is
  followed by a byte here, which the watchdog waits on.
* **The heartbeat** (``heartbeat``): the watchdog writes the time of each of its wake-ups
  there (at least each ``DRAIN_INTERVAL``); a test process that sees it older than
  two drains, and that does not move when woken, knows the watchdog is dead or stopped,
  whatever became of its socket.

A test may close every descriptor it did not open (``os.closerange``) and reuse the
numbers: the client then loses its sockets but never touches a descriptor that is no longer
its own, and the slot and heartbeat (memory, no descriptor) keep working. A lost socket is
not a release: the watchdog keeps enforcing the slot of a process while it lives.

Frames are fixed-size binary headers plus a payload::

    kind (1 byte) | deadline | slow_at | armed_at (doubles) | length (uint32) | payload
"""

from __future__ import annotations

import os
import socket
import struct

from pytest_expiry.clock import clock

__all__ = [
    "DRAIN_INTERVAL",
    "EVENTS_NAME",
    "FRAME",
    "HELLO",
    "MAX_PAYLOAD",
    "PID_NAME",
    "RECORDED",
    "RELEASED",
    "SLOT",
    "STACKS_NAME",
    "STOP",
    "bind_sockets",
    "stacks_directory",
]

FRAME = struct.Struct("!cdddI")
HELLO = b"H"
SOCKET_NAME, WAKE_NAME = "socket", "wake"
STACKS_NAME, EVENTS_NAME, SCOPES_NAME = "stacks", "events.jsonl", "scopes"
HEARTBEAT_NAME = "heartbeat"
PID_NAME = "watchdog.pid"  # written by the launcher: the watchdog's pid, for tracing
STOP = b"S"  # the session's word on its stop socket: it is over
RECORDED = b"E"  # the watchdog's word on the same socket: an event was recorded
HEARTBEAT = struct.Struct("=d")
DRAIN_INTERVAL = 0.5
URGENT_WITHIN = 4 * DRAIN_INTERVAL
MAX_PAYLOAD = 1 << 16  # a scope id is a node id: a longer frame is not ours

SLOT = struct.Struct("=QdddQQ")
"""A slot's header: sequence, deadline (-1: released), slow_at, armed_at, name length, and
the sequence again (a header read half-written shows two different numbers)."""
SLOT_SEQUENCE = struct.Struct("=Q")
SLOT_NAME_AT = 64
SLOT_SIZE = SLOT_NAME_AT + MAX_PAYLOAD
RELEASED = -1.0


def bind_sockets(directory: str) -> tuple[socket.socket, socket.socket]:
    """The watchdog's listening stream socket and its wake datagram socket (and the
    directory of the scope slots)."""
    os.mkdir(os.path.join(directory, SCOPES_NAME), 0o700)
    with open(os.path.join(directory, HEARTBEAT_NAME), "wb") as heartbeat:
        heartbeat.write(HEARTBEAT.pack(clock()))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        listener.bind(os.path.join(directory, SOCKET_NAME))
        listener.listen(128)
        waker.bind(os.path.join(directory, WAKE_NAME))
    except OSError:
        listener.close()
        waker.close()
        raise
    return listener, waker


def stacks_directory(directory: str) -> str:
    """Where the processes of a session's tests write their stack dumps."""
    return os.path.join(directory, STACKS_NAME)
