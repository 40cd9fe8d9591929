"""What the user sees: the failure's expiry section, the terminal summary, the JSON report.

A test's expiry travels on its report as ``report.expiry`` (a JSON-ready dict), so that it
reaches the xdist controller like any other report attribute; :class:`ExpiryLog` gathers
them there, in one place, for the summary and the JSON file.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["ExpiryLog", "describe_expiry", "expiry_record"]


def _command(cmdline: list[str]) -> str:
    text = shlex.join(cmdline) if cmdline else "?"
    return text if len(text) <= 100 else text[:97] + "..."


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
        "processes": [{k: p[k] for k in ("pid", "ppid", "role", "cmdline")} for p in processes],
        "survivors": (event or {}).get("survivors", []),
    }


def describe_expiry(record: dict[str, Any]) -> str:
    """The text of the failure's expiry section: processes, signals, then every stack."""
    lines = [
        f"{record['nodeid']} expired in {record['phase']} after {record['elapsed']:.2f} s "
        f"(deadline {record['deadline']:g} s)"
    ]
    if not record["processes"]:
        lines.append("the watchdog's account did not arrive: no stacks or process list")
    stacks, signals = record["stacks"], record["signals"]
    for process in record["processes"]:
        sent = ", ".join(signals.get(str(process["pid"]), [])) or "-"
        lines.append(
            f"  pid {process['pid']:>7}  {process['role']:<12}  signals: {sent:<16}  "
            f"{_command(process['cmdline'])}"
        )
    for process in record["processes"]:
        pid = str(process["pid"])
        lines.append(f"\n--- stacks of pid {pid} ({process['role']}), most recent call first ---")
        lines.append(
            stacks.get(pid) or "(no Python stack: not a Python process, or it did not answer)"
        )
    if record["survivors"]:
        lines.append(f"\nstill alive after SIGKILL: {record['survivors']}")
    return "\n".join(lines)


@dataclass
class ExpiryLog:
    """Every expiry event of the session, gathered where the reports arrive."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def add_report(self, report: pytest.TestReport) -> None:
        for record in getattr(report, "expiry", None) or []:
            self.records.append(record)

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] in kinds]

    def summary_lines(self) -> list[str]:
        lines = []
        for record in self.of_kind("expired", "hard_killed"):
            killed = len(record["signals"])
            how = "HARD-KILLED" if record["event"] == "hard_killed" else "EXPIRED"
            lines.append(
                f"{how} {record['nodeid']} in {record['phase']} after {record['elapsed']:.2f} s "
                f"(deadline {record['deadline']:g} s); processes signalled: {killed}"
            )
        for record in self.of_kind("slow"):
            lines.append(
                f"SLOW {record['nodeid']}: {record['elapsed']:.2f} s of its "
                f"{record['deadline']:g} s deadline"
            )
        return lines

    def write_json(self, path: str, exit_status: int) -> None:
        """Write the JSON report; an unwritable path is reported, never fatal."""
        document = {
            "version": 1,
            "exit_status": exit_status,
            "expired": len(self.of_kind("expired", "hard_killed")),
            "slow": len(self.of_kind("slow")),
            "events": self.records,
        }
        try:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            with open(path, "w") as out:
                json.dump(document, out, indent=2)
        except OSError as error:
            sys.stderr.write(f"pytest-expiry: cannot write the JSON report {path}: {error}\n")
