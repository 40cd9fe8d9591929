"""Which watchdog an xdist worker uses: its controller's, or one of its own.

The controller hands each worker a card (:func:`controller_card`): where its watchdog is, the
host's boot id, the directory's device and inode, and a nonce it wrote into that directory.
A worker shares the controller's watchdog only if it runs on the same boot of the same host,
sees that very directory (not one of the same name in a private ``/tmp``) and can read the
nonce in it (the directory is the controller's user's alone): :func:`join_shared`. It then
says so with a file in the directory, which the controller reads when the worker comes up
(:func:`shares`). Any other worker (``--tx ssh=``, ``--tx socket=``, a container) runs a
watchdog of its own on its host, with the same settings.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from pytest_expiry.clock import clock

__all__ = ["controller_card", "host_identity", "host_label", "join_shared", "shares"]

_NONCE_NAME = "session"
_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def host_identity() -> str:
    """This boot of this host: the kernel's boot id, or the host name where there is none."""
    try:
        with open(_BOOT_ID) as boot:
            return boot.read().strip()
    except OSError:
        return "host:" + socket.gethostname()


def controller_card(
    directory: str, signals: str, deadline: float, session: float
) -> dict[str, Any]:
    """What a worker needs to find its controller's watchdog, or to run its own: written
    once per session (the nonce file in ``directory``), sent in each worker's
    ``workerinput``. ``remaining`` is what is left of the session budget, in seconds: a
    worker on another host cannot read ``deadline``, a value of this host's clock."""
    path = os.path.join(directory, _NONCE_NAME)
    if not os.path.exists(path):
        with open(path, "w") as nonce_file:
            nonce_file.write(uuid.uuid4().hex[:16])
    with open(path) as nonce_file:
        nonce = nonce_file.read()
    status = os.stat(directory)
    return {
        "directory": directory, "signals": signals, "nonce": nonce,
        "host": host_identity(), "device": status.st_dev, "inode": status.st_ino,
        "deadline": deadline, "remaining": deadline - clock() if session else 0.0,
    }  # fmt: skip


def _reaches(card: dict[str, Any]) -> bool:
    if card["host"] != host_identity():
        return False
    try:
        status = os.stat(card["directory"])
        with open(os.path.join(card["directory"], _NONCE_NAME)) as nonce_file:
            nonce = nonce_file.read()
    except OSError:  # not there, or another user's
        return False
    return (status.st_dev, status.st_ino) == (card["device"], card["inode"]) and (
        nonce == card["nonce"]
    )


def join_shared(card: dict[str, Any], worker: str) -> bool:
    """Worker side: True if this worker can use its controller's watchdog, which it then
    tells the controller (a file ``worker-<id>`` in the watchdog's directory)."""
    if not _reaches(card):
        return False
    try:
        with open(os.path.join(card["directory"], f"worker-{worker}"), "w"):
            pass
    except OSError:
        return False
    return True


def shares(directory: str, worker: str) -> bool:
    """Controller side: whether ``worker`` said it uses the watchdog in ``directory``."""
    return os.path.exists(os.path.join(directory, f"worker-{worker}"))


def host_label(spec: Any) -> str:
    """How the controller names the host of a worker it cannot see: from its ``--tx``
    spec (``ssh=host2``, ``socket=10.0.0.5:8888``, ``popen//python=...``)."""
    for kind in ("ssh", "socket", "vagrant_ssh"):
        where = getattr(spec, kind, None)
        if where:
            return str(where)
    python = getattr(spec, "python", None)
    return f"python={python}" if python else str(getattr(spec, "id", None) or "a worker")
