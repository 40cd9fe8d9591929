"""Callbacks that run after a fork or after a delay, held by weak references.

What the interpreter keeps until the very end of its exit, an at-fork handler
(``os.register_at_fork``) or a daemon thread's running frame, keeps alive all that it reaches,
past the teardown of the modules. Reaching much cost every pytest run's exit 5 ms or more: a
function of a module that imports much, or just one that holds an object of ``typing`` (an
annotation evaluated at run time), is enough. So the handler and the thread's target live here,
in a module that holds next to nothing (typing is imported for the type checker only), and they
reach the callbacks only through weak references: a function lives as long as its module, a
bound method as long as its object.
"""

from __future__ import annotations

import os
import threading
import time
import types
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["after_fork_in_child", "call_later"]

_after_fork: list[weakref.ref[Callable[..., object]]] = []


def _weakly(callback: Callable[..., object]) -> weakref.ref[Callable[..., object]]:
    if isinstance(callback, types.MethodType):
        return weakref.WeakMethod(callback)
    return weakref.ref(callback)


def after_fork_in_child(callback: Callable[[], object]) -> None:
    """Call ``callback()`` in every child forked from now on, for as long as it lives."""
    if not hasattr(os, "register_at_fork"):
        return
    if not _after_fork:
        os.register_at_fork(after_in_child=_run_after_fork)
    _after_fork.append(_weakly(callback))


def _run_after_fork() -> None:
    for reference in list(_after_fork):
        callback = reference()
        if callback is not None:
            callback()


def call_later(seconds: float, callback: Callable[..., object], *args: Any, name: str) -> None:
    """Call ``callback(*args)`` ``seconds`` from now in a daemon thread named ``name``, if it
    still lives then. Returns at once; the thread never keeps the process alive."""
    threading.Thread(
        target=_sleep_then_call, args=(seconds, _weakly(callback), args), name=name, daemon=True
    ).start()


def _sleep_then_call(
    seconds: float, reference: weakref.ref[Callable[..., object]], args: tuple[Any, ...]
) -> None:
    time.sleep(seconds)
    callback = reference()
    if callback is not None:
        callback(*args)
