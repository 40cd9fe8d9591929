"""Native frames (function and library) of a process stuck in C, read from outside before
the watchdog kills it.

faulthandler shows only the last Python frame of a thread that is inside a C extension
(a ``ctypes`` call, a native mutex). Where an unwinder is installed, the watchdog reads each
thread's native frames too: ``py-spy dump --native`` (the ``pytest-expiry[native]`` extra),
else ``gdb``, else ``eu-stack``; with none, nothing changes. All of the processes are read at
once, within :data:`LIMIT` seconds in all, so a slow unwinder never delays the kill by more.

Where Yama's ``ptrace_scope`` is 1 (common on CI runners) only a process's ancestors may trace
it, and the watchdog is not one: the test process names it with ``PR_SET_PTRACER``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

__all__ = [
    "LIMIT",
    "allow_tracing_by",
    "find_native_unwinder",
    "native_stacks",
    "run_unwinders",
]

LIMIT = 1.0
_YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"
_PR_SET_PTRACER = 0x59616D61


def find_native_unwinder() -> str | None:
    """The unwinder the watchdog uses: ``py-spy`` (beside this interpreter, or on PATH), else
    ``gdb``, else ``eu-stack``; None when there is none."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(beside, os.X_OK):
        return beside
    for name in ("py-spy", "gdb", "eu-stack"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _command(unwinder: str, pid: int) -> list[str]:
    name = os.path.basename(unwinder)
    if name == "gdb":
        return [unwinder, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"]
    if name == "eu-stack":
        return [unwinder, "-p", str(pid)]
    return [unwinder, "dump", "--native", "--pid", str(pid)]


def run_unwinders(commands: dict[int, list[str]], limit: float) -> dict[int, str]:
    """Run every ``pid -> command`` at once; ``pid -> output`` of those that succeeded
    within ``limit`` seconds in all (the others are killed)."""
    running = {}
    for pid, command in commands.items():
        try:
            running[pid] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
            )
        except OSError:
            continue
    end = time.monotonic() + limit
    outputs: dict[int, str] = {}
    for pid, unwinding in running.items():
        try:
            out, _ = unwinding.communicate(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            unwinding.kill()
            unwinding.communicate()
            continue
        if unwinding.returncode == 0:
            outputs[pid] = out.decode(errors="replace")
    return outputs


def native_stacks(pids: list[int], unwinder: str, limit: float = LIMIT) -> dict[int, str]:
    """``pid -> text`` of every thread's frames, most recent call first, for those of
    ``pids`` the unwinder could read within ``limit`` seconds (all read at once)."""
    commands = {pid: _command(unwinder, pid) for pid in pids}  # a dict: each pid once
    dumps = run_unwinders(commands, limit)
    frames = {pid: _frames_only(dump) for pid, dump in dumps.items()}
    return {pid: text for pid, text in frames.items() if text}


_FRAMES_PER_THREAD = 30


def _frames_only(dump: str) -> str:
    """Each thread's header and native frames, without the unwinder's own chatter (py-spy's
    process and version lines, gdb's symbol loading). py-spy mixes in the Python frames: a
    thread's frames stop at its innermost Python frame, which the Python stacks go on from."""
    lines: list[str] = []
    hidden, shown, at_python = 0, 0, False
    for raw in [*dump.rstrip().splitlines(), "Thread (end)"]:
        line = raw.rstrip()
        if line.startswith(("Thread ", "TID ")):
            if hidden:
                lines.append(f"    ... {hidden} more frames")
            hidden, shown, at_python = 0, 0, False
            if line != "Thread (end)":
                lines.append(line)
        elif line.startswith(("#", "    ")):
            if at_python or shown >= _FRAMES_PER_THREAD:
                hidden += 1
                continue
            lines.append(line if len(line) <= 200 else line[:197] + "...")
            shown += 1
            at_python = ".py:" in line
    return "\n".join(lines)


def allow_tracing_by(pid: int) -> bool:
    """Let process ``pid`` (the watchdog) trace this one where Yama restricts tracing to
    ancestors (``ptrace_scope`` 1). True if this was needed and done; a no-op elsewhere."""
    try:
        with open(_YAMA_SCOPE) as scope:
            if scope.read().strip() != "1":
                return False
    except OSError:
        return False  # no Yama (or not Linux): nothing restricts the watchdog
    import ctypes  # noqa: PLC0415 - only where Yama asks for it

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_PTRACER, pid, 0, 0, 0) == 0)
