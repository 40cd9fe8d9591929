"""Stacks of Python processes from outside, with an external unwinder (py-spy), for the
processes a test started: they hold nothing of ours (no handler, no descriptor), so the
watchdog reads their stacks the way a debugger would. Used by ``--expiry-child-stacks=auto``
when ``py-spy`` is installed (``pip install 'pytest-expiry[native]'``); otherwise such
processes are listed without stacks."""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the test process asks only find_unwinder(), for its header
    import psutil

__all__ = ["MOST", "find_unwinder", "unwind"]

_LIMIT = 1.0  # a slow unwinder never delays the kill by more than this
# each reading costs about 8 ms of CPU, and the interrupt and the kill wait for all of them:
# a tree of 50 Python processes would add 200 ms on 2 cores, for 50 stacks alike
MOST = 16


def find_unwinder() -> str | None:
    """The py-spy executable: beside this interpreter (the same virtualenv), or on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.access(beside, os.X_OK) else shutil.which("py-spy")


def _looks_like_python(process: psutil.Process) -> bool:
    import psutil  # noqa: PLC0415

    try:
        name = os.path.basename(process.exe() or (process.cmdline() or [""])[0])
    except psutil.Error:
        return False
    return name.startswith(("python", "pypy"))


def unwind(processes: list[psutil.Process], unwinder: str) -> dict[int, str]:
    """``pid -> dump`` (the main thread first) for the first :data:`MOST` Python processes
    of ``processes`` (all at once, within ``_LIMIT`` seconds in all); each further one gets a
    line that says why it was not read. Pass the processes nearest the hang first."""
    from pytest_expiry.stacks.collect import main_thread_first  # noqa: PLC0415
    from pytest_expiry.stacks.native import run_unwinders  # noqa: PLC0415

    python = [p.pid for p in processes if _looks_like_python(p)]
    commands = {pid: [unwinder, "dump", "--pid", str(pid)] for pid in python[:MOST]}
    dumps = {
        pid: main_thread_first(_as_faulthandler(out, pid))
        for pid, out in run_unwinders(commands, _LIMIT).items()
    }
    note = f"(not read: the stacks of the first {MOST} Python processes only, to end all sooner)"
    return {pid: text for pid, text in dumps.items() if text} | dict.fromkeys(python[MOST:], note)


_FRAME = re.compile(r"^\s+(?P<function>.+?) \((?P<file>.+):(?P<line>\d+)\)$")
# py-spy names a thread only when Python knows its name (not in a ``python -c`` process)
_THREAD = re.compile(r'^Thread (?P<id>\S+) \((?P<state>[^)]*)\)(?:: "(?P<name>[^"]*)")?')


def _as_faulthandler(dump: str, pid: int) -> str:
    """py-spy's dump in faulthandler's shape, so every stack in a report reads alike: a
    header per thread (the main thread as the current one, which reports put first), then
    ``File "...", line N in function`` per frame, most recent first."""
    lines: list[str] = []
    for raw in dump.splitlines():
        thread, frame = _THREAD.match(raw), _FRAME.match(raw)
        if thread is not None:
            main = thread["name"] == "MainThread" or thread["id"] == str(pid)
            which = "Current thread" if main else "Thread"
            lines += ["", f"{which} {thread['id']} ({thread['state']}, most recent call first):"]
        elif frame is not None:
            lines.append(f'  File "{frame["file"]}", line {frame["line"]} in {frame["function"]}')
    return "\n".join(lines).strip()
