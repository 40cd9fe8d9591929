"""Where a worker's own watchdog keeps its account of a hard kill, and how the xdist
controller collects it.

A worker that cannot reach its controller's watchdog (another host, another boot, another
user, a private ``/tmp``) runs one of its own, in ``<base>/<nonce>-<worker>-XXXXXXXX``:
``base`` a directory of this user's alone in the host's temporary directory, ``nonce`` the
controller's session, ``worker`` the xdist worker id. When that watchdog hard-kills its
worker, the worker can tell nobody; the watchdog outlives it with its ``events.jsonl`` until
the controller has read it (:func:`collect` marks the directory ``collected``) or
``LINGER`` seconds have passed.

The controller reads it through execnet, over the worker's own ``--tx`` spec:
``gateway.remote_exec(accounts)`` runs this module on the worker's host, so it imports
nothing but the standard library (the host needs nothing of ours to answer).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from typing import Any

__all__ = ["COLLECTED", "LINGER", "base", "collect", "prefix", "private_base", "read_events"]

COLLECTED = "collected"
LINGER = 30.0
_EVENTS = "events.jsonl"  # channel.EVENTS_NAME, which this module cannot import
_POLL = 0.02


def base() -> str:
    """This user's directory of worker watchdogs on this host (a short path: a socket
    path has at most 107 bytes)."""
    root = tempfile.gettempdir()
    return os.path.join(root if len(root) < 40 else "/tmp", f"pytest-expiry-{os.getuid()}")


def private_base() -> str:
    """:func:`base`, created with mode 0700 if need be. Raises OSError unless it is a
    directory that this user owns and nobody else can enter (a name in a shared ``/tmp``
    can be taken by anyone first)."""
    path = base()
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    status = os.lstat(path)
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise OSError(f"{path} is not a private directory of this user")
    return path


def prefix(nonce: str, worker: str) -> str:
    """The name prefix of the directories of the watchdogs of one worker of one session."""
    return f"{nonce}-{worker}-"


def read_events(path: str) -> list[dict[str, Any]]:
    """The events of a watchdog's log (``events.jsonl``) written so far: every complete
    line. The watchdog may be appending one as we read (a hard kill's account, with its
    stacks, runs to many kilobytes): that torn last line is left for the next read, and
    the events before it still count."""
    try:
        with open(path, "rb") as log:
            text = log.read()
    except OSError:
        return []
    events = []
    for line in text.split(b"\n")[:-1]:  # what follows the last newline is still being written
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def _events(directory: str) -> list[dict[str, Any]]:
    return read_events(os.path.join(directory, _EVENTS))


def collect(name_prefix: str, nodeid: str, wait: float) -> dict[str, Any] | None:
    """The ``hard_killed`` event for ``nodeid`` of this host's worker watchdogs named
    ``name_prefix``, or None if none of them killed it. While a killing is logged without
    its outcome, waits for it (at most ``wait`` seconds). The directories are then marked
    collected, so that their watchdogs may end."""
    try:
        names = os.listdir(base())
    except OSError:
        return None
    directories = [os.path.join(base(), name) for name in names if name.startswith(name_prefix)]
    end = time.monotonic() + wait
    try:
        while True:
            events = [e for d in directories for e in _events(d) if e.get("nodeid") == nodeid]
            for event in events:
                if event.get("hard_killed"):
                    return event
            if time.monotonic() >= end or not any(e["event"] == "killing" for e in events):
                return None
            time.sleep(_POLL)
    finally:
        for directory in directories:
            with contextlib.suppress(OSError), open(os.path.join(directory, COLLECTED), "w"):
                pass


if __name__ == "__channelexec__":  # run on a worker's host by the controller, via execnet
    _channel: Any = globals()["channel"]
    _prefix, _nodeid, _wait = _channel.receive()
    _channel.send(collect(_prefix, _nodeid, _wait))
