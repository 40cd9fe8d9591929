"""Processes by identity: finding them, telling them apart from strangers, ending them.

A pid alone is not an identity: once a process is gone its pid can be handed to another.
Everything here works on ``psutil.Process`` objects, which remember the create time they saw
and refuse to signal a process whose create time differs (a recycled pid).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

from pytest_expiry import lineage

__all__ = [
    "Ending",
    "end_processes",
    "gone",
    "identify",
    "is_protected",
    "never_leaked",
    "start_time",
    "started_before",
    "tree_of",
]

_POLL_FIRST = 0.002
_POLL_MAX = 0.02
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def is_protected(pid: int) -> bool:
    """Pids that are never signalled: the kernel's, init, and this process itself."""
    return pid <= 1 or pid == os.getpid()


def start_time(pid: int) -> float | None:
    """When process ``pid`` started, on a clock that setting the system clock does not move,
    or None if it is gone. Two processes that held one pid have different start times.

    Not ``psutil.Process.create_time()``: that adds the boot time, which Linux derives from
    the wall clock, so an NTP step (or slew across a second) makes one process's create time
    change, and an identity check then takes the session, or a test process, for a
    stranger. On Linux this is the start in seconds since boot (``/proc/<pid>/stat``);
    elsewhere psutil's create time, the best there is."""
    if sys.platform.startswith("linux"):
        stat = lineage.read_proc(f"/proc/{pid}/stat")
        fields = stat[stat.rfind(b")") + 2 :].split() if stat else []
        return int(fields[19]) / _CLOCK_TICKS if len(fields) > 19 else None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def started_before(pid: int, moment: float) -> bool:
    """Whether process ``pid`` surely started before ``moment``, a time of this package's
    clock (``time.monotonic``); False if it is gone. Linux knows a start to the clock tick:
    a process started within a tick of ``moment`` is not surely before it."""
    started = start_time(pid)
    if started is None:
        return False
    if sys.platform.startswith("linux"):  # since boot: the clock that counts from boot too
        offset, tick = time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic(), 1 / _CLOCK_TICKS
    else:
        offset, tick = time.time() - time.monotonic(), 0.0
    return started + tick <= moment + offset


def keep_importable() -> None:
    """Put psutil back in ``sys.modules`` if it is missing there: an in-process pytester run
    restores ``sys.modules`` as it found it, which drops psutil when that run imported it
    first, and psutil looks itself up there (``get_procfs_path``)."""
    sys.modules.setdefault("psutil", psutil)


def identify(pid: int, started: float | None = None) -> psutil.Process | None:
    """The live process ``pid``, if it is the one whose :func:`start_time` is ``started``.

    Returns None when the pid is gone, protected, or now names another process. With no
    ``started`` the process found now is taken as it is.
    """
    if is_protected(pid):
        return None
    if started is not None and start_time(pid) != started:
        return None
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return None
    # the pid may have changed hands between the two reads
    return process if started is None or start_time(pid) == started else None


def gone(process: psutil.Process) -> bool:
    """True once ``process`` has exited: reaped, a zombie, or its pid taken by another."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


_SHARED_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _command(process: psutil.Process) -> str | None:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return None


def _helper_in(command: str | None) -> str | None:
    return next((h for h in _SHARED_HELPERS if command and h in command), None)


def is_shared_helper(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker and fork server: started once, shared by every
    later test, and ending by themselves with their parent. They are never the hang. The
    fork server's children carry its command line (they are forks of it) but are the test's
    own processes: a process whose parent runs the same helper is not one."""
    helper = _helper_in(_command(process))
    if helper is None:
        return False
    try:
        parent = process.parent()
    except psutil.Error:
        return True
    return parent is None or _helper_in(_command(parent)) != helper


# Never a test's leak: the plugin's own watchdog (its controller stops it), and the gateways of
# pytest-xdist/execnet (a worker still shutting down when the test that ran it ended).
_INFRASTRUCTURE = ("-m pytest_expiry.watchdog.main", "import sys;exec(eval(sys.stdin.readline()))")


def never_leaked(process: psutil.Process) -> bool:
    """Processes leak detection never reports or ends: multiprocessing's shared helpers, our
    watchdog, and execnet gateways (xdist workers). False when the command line cannot be
    read (the caller decides what a process that cannot be described is)."""
    command = _command(process)
    if command is None:
        return False
    return is_shared_helper(process) or any(marker in command for marker in _INFRASTRUCTURE)


def tree_of(process: psutil.Process) -> list[psutil.Process]:
    """Every live descendant of ``process``, parents before children; zombies and
    multiprocessing's shared helpers (but not their children) are left out."""
    try:
        descendants = process.children(recursive=True)
    except psutil.Error:
        return []
    return [
        p
        for p in descendants
        if not is_protected(p.pid) and not gone(p) and not is_shared_helper(p)
    ]


def wait_gone(processes: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``processes`` to exit; return those still alive."""
    alive = [p for p in processes if not gone(p)]
    end = time.monotonic() + timeout
    pause = _POLL_FIRST
    while alive and time.monotonic() < end:
        time.sleep(min(pause, max(0.0, end - time.monotonic())))
        pause = min(pause * 2, _POLL_MAX)
        alive = [p for p in alive if not gone(p)]
    return alive


@dataclass
class Ending:
    """What :func:`end_processes` did: the signals sent to each pid, and who survived."""

    signals: dict[int, list[str]] = field(default_factory=dict)
    survivors: list[int] = field(default_factory=list)

    def record(self, process: psutil.Process, sig: signal.Signals) -> None:
        self.signals.setdefault(process.pid, []).append(sig.name)


def _send(process: psutil.Process, sig: signal.Signals, ending: Ending) -> None:
    if is_protected(process.pid):
        return
    try:
        process.send_signal(sig)  # psutil refuses a pid that was recycled
    except psutil.Error:
        return
    ending.record(process, sig)


def end_processes(processes: list[psutil.Process], grace: float) -> Ending:
    """SIGTERM every process, SIGKILL those still running after ``grace`` seconds.

    With ``grace`` of 0 the first signal is SIGKILL. Processes that are already gone, or whose
    pid was recycled, are never signalled.
    """
    ending = Ending()
    targets = [p for p in processes if not gone(p)]
    if grace > 0:
        for process in targets:
            _send(process, signal.SIGTERM, ending)
        targets = wait_gone(targets, grace)
    for process in targets:
        _send(process, signal.SIGKILL, ending)
    ending.survivors = [p.pid for p in wait_gone(targets, 1.0)]
    return ending
