"""What /proc says about a process: CPU time of all its threads, wake-ups, liveness.

Linux first (nanosecond CPU times from ``schedstat``); psutil where /proc is missing.
"""

from __future__ import annotations

from pathlib import Path

import psutil

__all__ = ["cpu_seconds", "start_time", "wakeups"]


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of all of ``process``'s threads: from /proc/PID/task/*/schedstat on Linux
    (nanoseconds), else psutil's (clock ticks, 10 ms)."""
    tasks = Path(f"/proc/{process.pid}/task")
    if not tasks.is_dir():
        times = process.cpu_times()
        return float(times.user + times.system)
    total = 0
    for stat in tasks.glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def wakeups(pid: int) -> int:
    """Voluntary context switches of all of ``pid``'s threads (0 without /proc)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def start_time(pid: int) -> bytes | None:
    """The start time of ``pid`` from /proc, or None once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return None if fields[0] in (b"Z", b"X") else fields[19]
