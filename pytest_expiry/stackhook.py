"""Make this process, and every process it forks, dump its stacks on the stacks signal.

Each process writes to ``<directory>/<pid>``: the file's existence tells the watchdog that the
process will answer the stacks signal (a process without the handler would die of it). The
test process calls :func:`install`; Python processes it starts find the directory in the
environment (``PYTEST_EXPIRY_STACKS=<signal>:<directory>``) through the ``pytest-expiry.pth``
start-up hook and call :func:`install_from_environment`.

This module is imported at start-up of every such process: it must stay small and import
nothing heavy.
"""

from __future__ import annotations

import faulthandler
import os
from typing import IO

__all__ = ["ENV_STACKS", "install", "install_from_environment"]

ENV_STACKS = "PYTEST_EXPIRY_STACKS"


class _Hook:
    signum = 0
    directory = ""
    dump: IO[str] | None = None
    at_fork_registered = False


def _register() -> None:
    try:
        dump = open(os.path.join(_Hook.directory, str(os.getpid())), "w")  # noqa: SIM115
        faulthandler.register(_Hook.signum, file=dump, all_threads=True, chain=False)
    except (OSError, ValueError, RuntimeError):
        return
    previous, _Hook.dump = _Hook.dump, dump  # faulthandler holds only the fd: keep the file
    if previous is not None:
        previous.close()


def install(signum: int, directory: str) -> None:
    """Dump stacks to ``directory/<pid>`` on ``signum``, in this process and its forks."""
    _Hook.signum = signum
    _Hook.directory = directory
    _register()
    if not _Hook.at_fork_registered:
        _Hook.at_fork_registered = True
        os.register_at_fork(after_in_child=_register)


def install_from_environment() -> None:
    """The start-up hook: install from ``PYTEST_EXPIRY_STACKS`` if it is well formed."""
    signum, _, directory = os.environ.get(ENV_STACKS, "").partition(":")
    if signum.isdigit() and os.path.isdir(directory):
        install(int(signum), directory)
