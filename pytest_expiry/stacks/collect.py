"""Gathering every thread's stack from a set of processes, from the watchdog's side.

Processes that installed :mod:`pytest_expiry.stacks.hook` own a file ``<directory>/<pid>``;
the watchdog records its size, sends the stacks signal (faulthandler answers it even while C
code holds the GIL), and reads what was appended. A process is signalled only if it catches
the signal *now* (``SigCgt`` in ``/proc/<pid>/status``: exec and ``signal.signal(...,
SIG_DFL)`` reset it, and the default action would kill it) and still holds its dump file
open (a test that closed the descriptor may have reused its number for a file of its own).
"""

from __future__ import annotations

import os
import time

import psutil

from pytest_expiry.signals import signal_main_thread

__all__ = ["catches", "collect_stacks", "main_thread_first"]

_SETTLE = 0.005
_LIMIT = 1.0  # only a process that cannot answer (stopped, in D state) makes us wait this long
_POLL = 0.002


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` now. Where ``/proc`` does not
    say (not Linux), True: the dump file is then the only evidence."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except (OSError, ValueError):
        return False
    return False


def _holds_open(pid: int, path: str) -> bool:
    """Whether ``pid`` has a descriptor open on ``path`` (True where /proc cannot tell)."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except FileNotFoundError:
        return not os.path.isdir("/proc/self")
    except OSError:
        return False
    real = os.path.realpath(path)
    for name in names:
        try:
            if os.readlink(os.path.join(fds, name)) == real:
                return True
        except OSError:
            continue
    return False


def _dump_file(directory: str, process: psutil.Process, signum: int) -> str | None:
    path = os.path.join(directory, str(process.pid))
    try:
        written = os.stat(path).st_mtime
        started = process.create_time()
    except (OSError, psutil.Error):
        return None
    # a file older than the process was left by an earlier owner of the pid
    if written < started - 1.0:
        return None
    if not catches(process.pid, signum) or not _holds_open(process.pid, path):
        return None
    return path


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def collect_stacks(
    processes: list[psutil.Process], signum: int, directory: str, unwinder: str | None = None
) -> dict[int, str]:
    """Ask each process that can answer for its stacks; return ``pid -> dump``. Processes
    that cannot answer are read by ``unwinder`` (py-spy), if one is given.

    Waits until every dump has stopped growing for a moment, at most ``_LIMIT`` seconds
    (a stopped or uninterruptible process never answers).
    """
    files: dict[int, tuple[str, int]] = {}
    silent: list[psutil.Process] = []
    for process in processes:
        path = _dump_file(directory, process, signum)
        if path is None:
            silent.append(process)
            continue
        offset = _size(path)
        try:
            signal_main_thread(process.pid, signum)
        except OSError:
            continue
        files[process.pid] = (path, offset)
    _wait_until_written(files)
    dumps: dict[int, str] = {}
    for pid, (path, offset) in files.items():
        with open(path, errors="replace") as dump:
            dump.seek(offset)
            text = dump.read().strip()
        if text:
            dumps[pid] = main_thread_first(text)
    if unwinder is not None and silent:
        from pytest_expiry.stacks.unwinder import unwind  # noqa: PLC0415 - only with py-spy

        dumps.update(unwind(silent, unwinder))
    return dumps


def _wait_until_written(files: dict[int, tuple[str, int]]) -> None:
    start = time.monotonic()
    last_sizes: dict[int, int] = {}
    last_change = start
    while time.monotonic() - start < _LIMIT:
        time.sleep(_POLL)
        sizes = {pid: _size(path) for pid, (path, _) in files.items()}
        if sizes != last_sizes:
            last_sizes, last_change = sizes, time.monotonic()
            continue
        all_grew = all(sizes[pid] > offset for pid, (_, offset) in files.items())
        if all_grew and time.monotonic() - last_change >= _SETTLE:
            return


_MACHINERY = ("/_pytest/", "/pluggy/", "<frozen runpy>", "/xdist/", "/execnet/")


def _without_machinery(block: str) -> str:
    """Cut a thread's frames at the first one that belongs to pytest's own machinery: what
    lies below the test (hook calls, the session loop) never explains a hang."""
    lines = block.splitlines()
    for index, line in enumerate(lines[1:], start=1):
        if any(part in line for part in _MACHINERY):
            cut = len(lines) - index
            return "\n".join([*lines[:index], f"  ... {cut} frames of pytest's machinery"])
    return block


def _only_machinery(block: str) -> bool:
    """A thread other than the current one with nothing but pytest's machinery (or no
    frame at all): nothing in it explains a hang."""
    lines = block.splitlines()
    if lines[0].startswith("Current thread"):
        return False
    return len(lines) == 1 or (len(lines) == 2 and "frames of pytest's machinery" in lines[1])


def main_thread_first(dump: str) -> str:
    """Reorder a faulthandler dump so the thread that took the signal (the main thread,
    which is where a test hangs) comes first, each thread cut at pytest's machinery and
    threads with nothing else left out."""
    blocks = [_without_machinery(b) for b in dump.split("\n\n") if b.strip()]
    blocks = [block for block in blocks if not _only_machinery(block)]
    blocks.sort(key=lambda block: not block.startswith("Current thread"))
    return "\n\n".join(blocks)
