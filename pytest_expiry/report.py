"""What the user sees: the failure's expiry section, the terminal summary, the JSON report.

A test's expiry travels on its report as ``report.expiry`` (a JSON-ready dict), so that it
reaches the xdist controller like any other report attribute; :class:`ExpiryLog` gathers
them there, in one place, for the summary and the JSON file.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_expiry.history import Learned
from pytest_expiry.looptasks import describe_tasks

if TYPE_CHECKING:  # the watchdog process uses this module without importing pytest
    import pytest

__all__ = [
    "ExpiryLog",
    "deadline_text",
    "describe_expiry",
    "describe_leak",
    "expiry_record",
    "hard_kill_record",
    "iso_time",
    "slow_line",
]


def _command(cmdline: list[str]) -> str:
    text = shlex.join(cmdline) if cmdline else "?"
    return text if len(text) <= 100 else text[:97] + "..."


def iso_time(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (default: now) as ISO 8601 in UTC, to the millisecond."""
    utc = datetime.timezone.utc
    moment = (
        datetime.datetime.now(utc)
        if seconds is None
        else datetime.datetime.fromtimestamp(seconds, utc)
    )
    return moment.isoformat(timespec="milliseconds")


def expiry_record(
    nodeid: str, phase: str, seconds: float, elapsed: float, event: dict[str, Any] | None
) -> dict[str, Any]:
    """One JSON record for an expired scope, merging the watchdog's event when it came."""
    processes = (event or {}).get("processes", [])
    return {
        "event": "hard_killed" if (event or {}).get("hard_killed") else "expired",
        "nodeid": nodeid,
        "phase": phase,
        "deadline": seconds,
        "elapsed": round(elapsed, 4),
        "pids": [p["pid"] for p in processes],
        "signals": {str(p["pid"]): p["signals"] for p in processes if p["signals"]},
        "stacks": {str(p["pid"]): p["stack"] for p in processes if p.get("stack")},
        "native": {str(p["pid"]): p["native"] for p in processes if p.get("native")},
        "processes": [
            {
                "label": p.get("label", p["role"]),
                **{k: p[k] for k in ("pid", "ppid", "role", "cmdline")},
            }
            for p in processes
        ],
        "survivors": (event or {}).get("survivors", []),
        "interruptible": (event or {}).get("interruptible", True),
        "at": iso_time((event or {}).get("wall_time")),
    }


def hard_kill_record(event: dict[str, Any]) -> dict[str, Any]:
    """The record of a test whose process had to be killed: it never reported itself, so
    its deadline and elapsed time come from the watchdog's clock."""
    armed_at = event.get("armed_at") or event["deadline_at"]
    ended_at = event.get("killed_at") or event["expired_at"]
    seconds = round(event["deadline_at"] - armed_at, 4)
    return expiry_record(event["nodeid"], "unknown", seconds, ended_at - armed_at, event)


HARD_KILL_ADVICE = (
    "it did not stop when interrupted (C code holding the GIL, or code that swallows the "
    "Expired exception), so the watchdog killed its process"
)


NO_HANDLER = (
    "it could not be interrupted: it no longer catches the interrupt signal (the test reset "
    "it, or the process exec'd another program), so the watchdog killed its process"
)


def deadline_text(record: dict[str, Any]) -> str:
    """``deadline 1 s``; for a learned deadline (the record's ``learned``), ``learned
    deadline 1 s: 10 x 0.1 s, longest of 5 runs``."""
    learned = record.get("learned")
    if learned:
        numbers = (learned["factor"], learned["longest"], learned["runs"], learned["floor"])
        return Learned(record["deadline"], *numbers).describe()
    return f"deadline {round(record['deadline'], 3):g} s"


def _label(process: dict[str, Any]) -> str:
    return str(process.get("label") or process["role"])


def describe_expiry(record: dict[str, Any]) -> str:
    """The text of the failure's expiry section: processes, signals, then every stack."""
    where = f" in {record['phase']}" if record["phase"] != "unknown" else ""
    lines = [
        f"{record['nodeid']} expired{where} after {record['elapsed']:.2f} s "
        f"({deadline_text(record)})"
    ]
    if record["event"] == "hard_killed":
        lines.append(HARD_KILL_ADVICE if record.get("interruptible", True) else NO_HANDLER)
    if not record["processes"]:
        lines.append("the watchdog's account did not arrive: no stacks or process list")
    stacks, signals = record["stacks"], record["signals"]
    width = max((len(_label(p)) for p in record["processes"]), default=0)
    for process in record["processes"]:
        sent = ", ".join(signals.get(str(process["pid"]), [])) or "-"
        lines.append(
            f"  pid {process['pid']:>7}  {_label(process):<{width}}  signals: {sent:<16}  "
            f"{_command(process['cmdline'])}"
        )
    if record.get("tasks"):
        lines.append("\n--- pending tasks of the test's event loop, most recent call first ---")
        lines.append(describe_tasks(record["tasks"]))
    for process in record["processes"]:
        pid = str(process["pid"])
        native = record.get("native", {}).get(pid)
        if native:  # above the Python frames: where a thread stuck in C really is
            lines.append(
                f"\n--- native frames of pid {pid} ({_label(process)}), most recent first ---"
            )
            lines.append(native)
        lines.append(f"\n--- stacks of pid {pid} ({_label(process)}), most recent call first ---")
        lines.append(
            stacks.get(pid) or "(no Python stack: not a Python process, or it did not answer)"
        )
    if record["survivors"]:
        lines.append(f"\nstill alive after SIGKILL: {record['survivors']}")
    return "\n".join(lines)


def slow_line(record: dict[str, Any]) -> str:
    """``SLOW t.py::test_x: 3.00 s of its 5 s deadline``, for a test that ended in time."""
    return (
        f"SLOW {record['nodeid']}: {record['elapsed']:.2f} s of its "
        f"{round(record['deadline'], 3):g} s deadline"
    )


def _exit_blocked_lines(record: dict[str, Any]) -> list[str]:
    lines = []
    for thread in record["threads"]:
        lines.append(
            f"EXIT BLOCKED xdist worker {record['worker']}: thread {thread['name']!r} left "
            f"running by {thread['test']}; the worker cannot exit until it ends"
        )
        lines.extend(f"  {line}" for line in thread["stack"].rstrip().splitlines())
    return lines


def describe_leak(record: dict[str, Any]) -> str:
    """The text of a LEAKED record: which processes outlived the test, and what was done."""
    done = {"kill": "ended", "fail": "ended", "warn": "left running"}[record["action"]]
    lines = [f"{record['nodeid']} left {len(record['pids'])} processes running ({done}):"]
    width = max((len(p.get("label", "")) for p in record["processes"]), default=0)
    for process in record["processes"]:
        sent = ", ".join(record["signals"].get(str(process["pid"]), [])) or "-"
        lines.append(
            f"  pid {process['pid']:>7}  {process.get('label', ''):<{width}}  "
            f"signals: {sent:<16}  {_command(process['cmdline'])}"
        )
    return "\n".join(lines)


@dataclass
class ExpiryLog:
    """Every expiry event of the session, gathered where the reports arrive."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def add_report(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        """Keep the report's records; those of an attempt that pytest-rerunfailures runs
        again (outcome ``rerun``) say so (``run_again``)."""
        records = getattr(report, "expiry", None) or []
        if getattr(report, "outcome", "") == "rerun":
            attempt = int(getattr(report, "rerun", 0)) + 1  # a hard kill's record has none
            records = [{"attempt": attempt, **record, "run_again": True} for record in records]
        self.records.extend(records)

    def add_exit_blockers(self, worker: str, threads: list[dict[str, Any]]) -> None:
        """An xdist worker that cannot exit: the threads its tests left still running."""
        record = {"event": "exit_blocked", "worker": worker, "threads": threads}
        self.records.append({**record, "at": iso_time()})

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] in kinds]

    def summary_lines(self) -> list[str]:
        lines = []
        for record in self.of_kind("expired", "hard_killed"):
            killed = len(record["signals"])
            how = "HARD-KILLED" if record["event"] == "hard_killed" else "EXPIRED"
            where = f" in {record['phase']}" if record["phase"] != "unknown" else ""
            lines.append(
                f"{how} {record['nodeid']}{where} after {record['elapsed']:.2f} s "
                f"({deadline_text(record)}); processes signalled: {killed}"
                + (
                    f"; attempt {record.get('attempt', 1)}, run again"
                    if record.get("run_again")
                    else ""
                )
            )
        for record in self.of_kind("leaked"):
            lines.append(f"LEAKED {describe_leak(record)}")
        for record in self.of_kind("leaked_thread"):
            lines.extend(
                f"LEAKED thread {thread['name']!r} started by {record['nodeid']}"
                for thread in record["threads"]
            )
        for record in self.of_kind("exit_blocked"):
            lines.extend(_exit_blocked_lines(record))
        not_run = self.of_kind("not_run")
        if not_run:
            lines.append(f"SESSION BUDGET exceeded: {len(not_run)} tests not run")
            lines.extend(f"NOT RUN {record['nodeid']}" for record in not_run)
        lines.extend(slow_line(record) for record in self.of_kind("slow"))
        return lines

    def write_json(self, path: str, exit_status: int) -> None:
        """Write the JSON report; an unwritable path is reported, never fatal."""
        document = {
            "version": 1,
            "exit_status": exit_status,
            "expired": len(self.of_kind("expired", "hard_killed")),
            "slow": len(self.of_kind("slow")),
            "not_run": len(self.of_kind("not_run")),
            "leaked": len(self.of_kind("leaked")),
            "leaked_threads": sum(len(r["threads"]) for r in self.of_kind("leaked_thread")),
            "exit_blocked": len(self.of_kind("exit_blocked")),
            "events": self.records,
        }
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            with open(path, "w") as out:
                json.dump(document, out, indent=2)
        except OSError as error:
            sys.stderr.write(f"pytest-expiry: cannot write the JSON report {path}: {error}\n")
