"""Bounding the interpreter's exit after the session.

Once pytest is done, a non-daemon thread, a ``concurrent.futures`` job, an atexit handler or
multiprocessing's join of a leftover child can keep the process alive forever.
:func:`bound_exit` starts a daemon thread that, if the interpreter is still shutting down
``seconds`` later, writes every thread's stack to stderr, ends the processes this one
started, and exits with the session's own status.

What counts as shutting down (:func:`shutting_down`) is read from the main thread: it has
stopped, or it is inside :func:`threading._shutdown`, which runs the callbacks of
``threading._register_atexit`` (``concurrent.futures`` joins its workers there) and then
joins the non-daemon threads; after that come the atexit handlers, with the main thread
stopped. A main thread still running the program (``pytest.main()`` called by a program,
pytester's in-process runs) is not exiting, and its exit is not ours to bound.

Not covered: a hang in an atexit handler registered before the plugin was loaded (the guard's
own handler, registered then, lets the guard go once every later handler has run, because a
daemon thread still alive when the interpreter finalizes makes every exit 5-15 ms slower), and
a hang after the interpreter has begun to finalize (a ``__del__`` blocking while modules are torn
down, say), where no daemon thread runs any more.
"""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
import threading
from types import FrameType
from typing import ClassVar, TextIO

__all__ = ["bound_exit", "prepare", "shutting_down"]


class _Guards:
    registered = False
    released = threading.Event()  # every atexit handler registered after prepare() has run
    threads: ClassVar[list[threading.Thread]] = []


def prepare() -> None:
    """Register the guard's atexit handler, once: called as the plugin is loaded, before
    conftest files and tests register handlers of their own (atexit runs them last registered
    first)."""
    if not _Guards.registered:
        _Guards.registered = True
        atexit.register(_release)


def _release() -> None:
    _Guards.released.set()
    for thread in _Guards.threads:
        thread.join(0.1)  # it returns at once: gone before the interpreter finalizes


def _inside(frame: FrameType | None, function: object) -> bool:
    code = getattr(function, "__code__", None)
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def shutting_down() -> bool:
    """True once the main thread has left the program for the interpreter's exit: it has
    stopped, or it is in ``threading._shutdown`` (whose start sets
    ``threading._SHUTTING_DOWN``, where the Python version has it)."""
    main = threading.main_thread()
    if not main.is_alive() or getattr(threading, "_SHUTTING_DOWN", False):
        return True
    frame = sys._current_frames().get(main.ident) if main.ident is not None else None
    return _inside(frame, getattr(threading, "_shutdown", None))


def _end_exit(seconds: float, status: int) -> None:
    out = sys.__stderr__
    if out is None:
        os._exit(status)
    out.write(
        f"\npytest-expiry: the session ended {seconds:g} s ago but the interpreter has not "
        "exited (a non-daemon thread, a concurrent.futures job, an atexit handler or a "
        "child process being joined). What blocks it:\n"
    )
    _name_the_tests_that_left_threads(out)
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


def _name_the_tests_that_left_threads(out: TextIO) -> None:
    from pytest_expiry.leaks.threads import left_by  # noqa: PLC0415 - needed only here

    for thread in threading.enumerate():
        test = left_by(thread)
        if test is not None and thread.is_alive():
            out.write(f"pytest-expiry: thread {thread.name!r} was left running by {test}\n")


def _watch(seconds: float, status: int) -> None:
    if not _Guards.released.wait(seconds) and shutting_down():
        _end_exit(seconds, status)


def bound_exit(seconds: float, status: int) -> None:
    """If ``seconds`` from now the process has not exited and is shutting down (see
    :func:`shutting_down`), report what blocks it and exit with ``status``; if it is still
    running the program then, do nothing. Returns at once: the check runs in a daemon
    thread, which never keeps the process alive."""
    prepare()
    guard = threading.Thread(target=_watch, args=(seconds, status), name="expiry-exit", daemon=True)
    guard.start()
    _Guards.threads.append(guard)
