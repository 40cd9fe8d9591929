"""What each process of an expiry is, in words a report can use instead of a command line.

A multiprocessing child started with fork runs pytest's own command line, and an xdist
worker runs ``python -c 'import sys;exec(eval(sys.stdin.readline()))'``: neither says what it
is. The watchdog labels descendants from what it can see from outside: the command line
(spawn and forkserver children say so), the parent's command line (a fork child repeats it)
and, once gathered, the stack (a pool's worker loop). The test process is named where its
xdist worker id is known (:func:`name_xdist_worker`: by the worker, or by the controller for
a worker it lost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_expiry.record import Record

__all__ = ["label_descendant", "name_xdist_worker"]

_POOL_LOOPS = (
    ("multiprocessing/pool.py", "Pool worker"),
    ("concurrent/futures/process.py", "ProcessPoolExecutor worker"),
)


def name_xdist_worker(record: Record, worker_id: str) -> None:
    """Label the test process of an expiry ``record`` as ``xdist worker <worker_id>``."""
    for process in record.get("processes", []):
        if process.get("role") == "test process":
            process["label"] = f"xdist worker {worker_id}"


def _start_method(cmdline: list[str], parent_cmdline: list[str]) -> str | None:
    """How multiprocessing started the process, if it did: ``spawn``, ``forkserver`` (a
    child of the fork server) or ``fork`` (the parent's command line, repeated)."""
    command = " ".join(cmdline)
    parent = " ".join(parent_cmdline)
    if "multiprocessing.spawn import spawn_main" in command:
        return "spawn"
    if "multiprocessing.forkserver import main" in parent:
        return "forkserver"
    if cmdline and cmdline == parent_cmdline:
        return "fork"
    return None


def label_descendant(cmdline: list[str], parent_cmdline: list[str], stack: str | None) -> str:
    """``Pool worker (spawn)``, ``multiprocessing child (fork)``, ``multiprocessing fork
    server``, ``multiprocessing resource tracker``, or ``subprocess`` for anything else."""
    command = " ".join(cmdline)
    if "multiprocessing.forkserver import main" in command and cmdline != parent_cmdline:
        return "multiprocessing fork server"  # its children are forks: the same command line
    if "multiprocessing.resource_tracker import main" in command:
        return "multiprocessing resource tracker"
    method = _start_method(cmdline, parent_cmdline)
    if method is None:
        return "subprocess"
    for path, name in _POOL_LOOPS:
        if stack is not None and path in stack.replace("\\", "/"):
            return f"{name} ({method})"
    if method == "fork" and stack is not None and "multiprocessing/" not in stack:
        return "forked child"  # os.fork() by the test, not multiprocessing
    return f"multiprocessing child ({method})"
