"""Bounding the interpreter's exit after the session.

Once pytest is done, a non-daemon thread, an atexit handler or multiprocessing's join of a
leftover child can keep the process alive forever. :func:`bound_exit` starts a daemon thread
that, if the interpreter is still shutting down ``seconds`` later, writes every thread's stack
to stderr, ends the processes this one started, and exits with the session's own status.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

__all__ = ["bound_exit"]


def _shutting_down() -> bool:
    # the main thread counts as finished once the interpreter has begun to shut down; while
    # it still runs (pytest.main() called from a program, pytester's in-process runs) the
    # process is not exiting, and its exit is not ours to bound
    return not threading.main_thread().is_alive()


def _end_exit(seconds: float, status: int) -> None:
    out = sys.__stderr__
    if out is None:
        os._exit(status)
    out.write(
        f"\npytest-expiry: the session ended {seconds:g} s ago but the interpreter has not "
        f"exited (a non-daemon thread, an atexit handler or a child process being joined). "
        f"What blocks it:\n"
    )
    out.flush()
    faulthandler.dump_traceback(file=out, all_threads=True)
    import psutil  # noqa: PLC0415 - needed only when the exit hangs

    from pytest_expiry import procs  # noqa: PLC0415

    ending = procs.end_processes(procs.tree_of(psutil.Process()), grace=1.0)
    if ending.signals:
        out.write(f"pytest-expiry: ended leftover processes {sorted(ending.signals)}\n")
    out.write(f"pytest-expiry: exiting with the session's status {status}\n")
    out.flush()
    os._exit(status)


def _watch(seconds: float, status: int) -> None:
    time.sleep(seconds)
    if _shutting_down():
        _end_exit(seconds, status)


def bound_exit(seconds: float, status: int) -> None:
    """If the process has not exited ``seconds`` from now, report why and exit(status)."""
    threading.Thread(target=_watch, args=(seconds, status), name="expiry-exit", daemon=True).start()
