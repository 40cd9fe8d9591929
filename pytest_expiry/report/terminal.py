"""The terminal's view of the records: a failure's expiry section, the summary lines."""

from __future__ import annotations

import re
import shlex
from typing import Any

from pytest_expiry.looptasks import describe_tasks
from pytest_expiry.record import Record, deadline_text

__all__ = [
    "describe",
    "describe_expiry",
    "describe_leak",
    "describe_threads",
    "overrun_text",
    "slow_line",
    "summary_lines",
]

HARD_KILL_ADVICE = (
    "it did not stop when interrupted (C code holding the GIL, or code that swallows the "
    "Expired exception), so the watchdog killed its process"
)

NO_HANDLER = (
    "it could not be interrupted: it no longer catches the interrupt signal (the test reset "
    "it, or the process exec'd another program), so the watchdog killed its process"
)


def overrun_text(record: Record) -> str:
    """``in call after 1.02 s (deadline 1 s)`` (no phase for a hard kill, whose phase the
    watchdog cannot know)."""
    where = f"in {record['phase']} " if record["phase"] != "unknown" else ""
    return f"{where}after {record['elapsed']:.2f} s ({deadline_text(record)})"


def _command(cmdline: list[str]) -> str:
    text = shlex.join(cmdline) if cmdline else "?"
    return text if len(text) <= 100 else text[:97] + "..."


def _label(process: dict[str, Any]) -> str:
    return str(process.get("label") or process["role"])


def _process_lines(record: Record) -> list[str]:
    processes = record.get("processes", [])
    signals = record.get("signals", {})
    width = max((len(_label(p)) for p in processes), default=0)
    return [
        f"  pid {p['pid']:>7}  {_label(p):<{width}}  "
        f"signals: {', '.join(signals.get(str(p['pid']), [])) or '-':<16}  "
        f"{_command(p['cmdline'])}"
        for p in processes
    ]


def describe_expiry(record: Record) -> str:
    """The failure's expiry section: processes, signals, then every stack."""
    lines = [f"{record['nodeid']} expired {overrun_text(record)}"]
    if record["event"] == "hard_killed":
        lines.append(HARD_KILL_ADVICE if record.get("interruptible", True) else NO_HANDLER)
    if not record["processes"]:
        lines.append("the watchdog's account did not arrive: no stacks or process list")
    lines.extend(_process_lines(record))
    if record.get("tasks"):
        lines.append("\n--- pending tasks of the test's event loop, most recent call first ---")
        lines.append(describe_tasks(record["tasks"]))
    shown: dict[str, str] = {}  # stacks (without thread ids) -> the pid they were shown for
    for process in record["processes"]:
        lines.extend(_process_stacks(record, process, shown))
    if record["survivors"]:
        lines.append(f"\nstill alive after SIGKILL: {record['survivors']}")
    return "\n".join(lines)


_THREAD_ID = re.compile(r"^(Current thread|Thread) \S+", re.MULTILINE)


def _process_stacks(record: Record, process: dict[str, Any], shown: dict[str, str]) -> list[str]:
    """One process's native frames and stacks; one line when the same stacks (thread ids
    aside) were shown for another process: fifty workers of a pool hung alike read as one."""
    pid, label = str(process["pid"]), _label(process)
    lines = []
    native = record.get("native", {}).get(pid)
    if native:  # above the Python frames: where a thread stuck in C really is
        lines += [f"\n--- native frames of pid {pid} ({label}), most recent first ---", native]
    stacks = record["stacks"].get(pid)
    frames = _THREAD_ID.sub(r"\1", stacks) if stacks else None
    if frames in shown and not native:
        return [f"--- stacks of pid {pid} ({label}): the same as pid {shown[frames]}'s ---"]
    if frames is not None:
        shown.setdefault(frames, pid)
    lines.append(f"\n--- stacks of pid {pid} ({label}), most recent call first ---")
    lines.append(stacks or "(no Python stack: not a Python process, or it did not answer)")
    return lines


def describe_leak(record: Record) -> str:
    """A LEAKED record: which processes outlived the test, and what was done."""
    done = {"kill": "ended", "fail": "ended", "warn": "left running"}[record["action"]]
    head = f"{record['nodeid']} left {len(record['pids'])} processes running ({done}):"
    return "\n".join([head, *_process_lines(record)])


def describe_threads(record: Record) -> str:
    """A leaked-thread record: each thread, the test that left it, its stack."""
    lines = []
    for thread in record["threads"]:
        lines.append(f"thread {thread['name']!r} started by {record['nodeid']} is still running")
        lines.extend(f"  {line}" for line in thread["stack"].rstrip().splitlines())
    return "\n".join(lines)


def describe(record: Record) -> str:
    """The text a report shows for ``record``, whatever its kind."""
    if record["event"] == "leaked":
        return describe_leak(record)
    if record["event"] == "leaked_thread":
        return describe_threads(record)
    return describe_expiry(record)


def slow_line(record: Record) -> str:
    """``SLOW t.py::test_x: 3.00 s of its 5 s deadline``, for a test that ended in time."""
    return (
        f"SLOW {record['nodeid']}: {record['elapsed']:.2f} s of its "
        f"{round(record['deadline'], 3):g} s deadline"
    )


def _expiry_line(record: Record) -> str:
    how = "HARD-KILLED" if record["event"] == "hard_killed" else "EXPIRED"
    again = f"; attempt {record.get('attempt', 1)}, run again" if record.get("run_again") else ""
    return (
        f"{how} {record['nodeid']} {overrun_text(record)}; "
        f"processes signalled: {len(record['signals'])}{again}"
    )


def _exit_blocked_lines(record: Record) -> list[str]:
    lines = []
    for thread in record["threads"]:
        lines.append(
            f"EXIT BLOCKED xdist worker {record['worker']}: thread {thread['name']!r} left "
            f"running by {thread['test']}; the worker cannot exit until it ends"
        )
        lines.extend(f"  {line}" for line in thread["stack"].rstrip().splitlines())
    return lines


def summary_lines(records: list[Record]) -> list[str]:
    """The session's ``expiry`` section: expiries, leaks, blocked exits, the budget, SLOW."""

    def of_kind(*kinds: str) -> list[Record]:
        return [r for r in records if r["event"] in kinds]

    lines = [_expiry_line(r) for r in of_kind("expired", "hard_killed")]
    lines.extend(f"LEAKED {describe_leak(r)}" for r in of_kind("leaked"))
    for record in of_kind("leaked_thread"):
        lines.extend(
            f"LEAKED thread {thread['name']!r} started by {record['nodeid']}"
            for thread in record["threads"]
        )
    for record in of_kind("exit_blocked"):
        lines.extend(_exit_blocked_lines(record))
    not_run = of_kind("not_run")
    if not_run:
        lines.append(f"SESSION BUDGET exceeded: {len(not_run)} tests not run")
        lines.extend(f"NOT RUN {record['nodeid']}" for record in not_run)
    lines.extend(slow_line(record) for record in of_kind("slow"))
    return lines
