"""What runs in a child this process forks (``os.register_at_fork``), held weakly.

The interpreter keeps its at-fork handlers until the very end of its exit, and with them all
that a handler reaches, past the teardown of the modules. Reaching much cost every pytest run's
exit about 5 ms: a function of a module that imports much, or just one that holds an object of
``typing`` (an annotation evaluated at run time), is enough. So the one handler lives here, in
a module that holds next to nothing (typing is imported for the type checker only), and it
reaches the callbacks only through weak references: a function lives as long as its module, a
bound method as long as its object.
"""

from __future__ import annotations

import os
import types
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["after_fork_in_child"]

_callbacks: list[weakref.ref[Callable[[], object]]] = []


def after_fork_in_child(callback: Callable[[], object]) -> None:
    """Call ``callback()`` in every child forked from now on, for as long as it lives."""
    if not hasattr(os, "register_at_fork"):
        return
    if not _callbacks:
        os.register_at_fork(after_in_child=_run)
    method = isinstance(callback, types.MethodType)
    _callbacks.append(weakref.WeakMethod(callback) if method else weakref.ref(callback))


def _run() -> None:
    for reference in list(_callbacks):
        callback = reference()
        if callback is not None:
            callback()
