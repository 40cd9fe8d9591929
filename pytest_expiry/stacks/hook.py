"""Make the test process, and every process it forks, dump its stacks on the stacks signal.

Each process writes to ``<directory>/<pid>``; the watchdog sends the signal only to a process
that catches it now and still holds that file open (a process without the handler would die
of it, and one that closed the file may have reused its descriptor).

Python processes that a test *starts* (not forks) get nothing by default: the start-up hook
(``pytest-expiry.pth``) acts only when ``--expiry-child-stacks=hook`` exported
``PYTEST_EXPIRY_STACKS=<signal>:<directory>``, and then imports nothing of this package, so
that a nested pytest sees the plugin exactly as it would without us.

A nested in-process session installs over the outer one and :func:`uninstall` gives the
outer one its registration back.
"""

from __future__ import annotations

import faulthandler
import os
from typing import IO, ClassVar

from pytest_expiry.forks import after_fork_in_child

__all__ = ["ENV_STACKS", "ChildEnvironment", "install", "uninstall"]

ENV_STACKS = "PYTEST_EXPIRY_STACKS"


class _Hook:
    # (signal, directory) of each session that installed, the innermost last
    installed: ClassVar[list[tuple[int, str]]] = []
    dump: IO[str] | None = None
    at_fork_registered = False


def _register() -> None:
    if not _Hook.installed:
        return
    signum, directory = _Hook.installed[-1]
    try:
        dump = open(os.path.join(directory, str(os.getpid())), "a")  # noqa: SIM115
        faulthandler.register(signum, file=dump, all_threads=True, chain=False)
    except (OSError, ValueError, RuntimeError):
        return
    previous, _Hook.dump = _Hook.dump, dump  # faulthandler holds only the fd: keep the file
    if previous is not None:
        previous.close()


def install(signum: int, directory: str) -> None:
    """Dump stacks to ``directory/<pid>`` on ``signum``, in this process and its forks."""
    _Hook.installed.append((signum, directory))
    _register()
    if not _Hook.at_fork_registered:
        _Hook.at_fork_registered = True
        after_fork_in_child(_register)


def uninstall() -> None:
    """Undo the last :func:`install` (the outer session's registration comes back)."""
    if not _Hook.installed:
        return
    signum, _ = _Hook.installed.pop()
    if _Hook.installed:
        _register()
        return
    faulthandler.unregister(signum)
    if _Hook.dump is not None:
        _Hook.dump.close()
        _Hook.dump = None


class ChildEnvironment:
    """Variables the scope hooks export to the processes tests start, and their restoration."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def set(self, name: str, value: str) -> None:
        self._saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
