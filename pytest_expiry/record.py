"""The one record of everything pytest-expiry reports: one typed shape, one constructor per
kind of event, and the phrases every output builds its lines from.

A record is a JSON-ready dict (it travels on pytest's reports to the xdist controller, and
from the watchdog as JSON), typed as :class:`Record`. Its ``event`` says which kind it is:

* ``expired``: a scope overran and the test was interrupted (or ended past its deadline);
* ``hard_killed``: the test could not be interrupted and its process was killed;
* ``slow``: a test that ended in time, but past the SLOW share of its deadline;
* ``leaked`` / ``leaked_thread``: processes / busy non-daemon threads a test left running;
* ``not_run``: a test the session budget left out;
* ``exit_blocked``: an xdist worker whose exit waits on threads its tests left.

Every output (the failure's section and the terminal summary, JUnit, JSON, the
``pytest_expiry_expired`` hook) is made from these records by :mod:`pytest_expiry.report`.
This module imports nothing of pytest: the watchdog process uses it too.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal, TypedDict

__all__ = [
    "SCHEMA_VERSION",
    "Record",
    "after_text",
    "deadline_text",
    "ended_late",
    "exit_blocked",
    "expired",
    "hard_killed",
    "iso_time",
    "leaked",
    "leaked_threads",
    "not_run",
    "slow",
]

SCHEMA_VERSION = 2
"""The version of the record's shape, written at the top of the JSON report."""

Kind = Literal[
    "expired", "hard_killed", "slow", "leaked", "leaked_thread", "not_run", "exit_blocked"
]


class Record(TypedDict, total=False):
    """One event. ``deadline`` and ``elapsed`` are durations in seconds (a test's limit and
    how long it ran); ``at`` is when the event happened, ISO 8601 in UTC."""

    event: Kind
    nodeid: str
    phase: str  # setup, call, teardown, collect; "unknown" for a hard kill
    deadline: float
    elapsed: float
    at: str
    pids: list[int]
    processes: list[dict[str, Any]]  # pid, ppid, role, label, cmdline
    signals: dict[str, list[str]]  # pid -> the signals sent to it
    stacks: dict[str, str]  # pid -> every thread's Python stack
    native: dict[str, str]  # pid -> native frames, before a hard kill
    survivors: list[int]
    interruptible: bool
    hung_at: dict[str, Any] | None  # file, line, function
    tasks: list[dict[str, Any]]  # an async test's pending tasks
    deadline_source: str
    learned: dict[str, Any]
    attempt: int
    run_again: bool
    worker: str
    action: str  # leak mode: warn, kill, fail
    threads: list[dict[str, Any]]
    late: bool  # ended after its deadline, before the interrupt reached it


def iso_time(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (default: now) as ISO 8601 in UTC, to the millisecond."""
    utc = datetime.timezone.utc
    moment = (
        datetime.datetime.now(utc)
        if seconds is None
        else datetime.datetime.fromtimestamp(seconds, utc)
    )
    return moment.isoformat(timespec="milliseconds")


def expired(
    nodeid: str, phase: str, seconds: float, elapsed: float, account: dict[str, Any] | None
) -> Record:
    """An expired scope, with the watchdog's ``account`` of it (processes, signals,
    stacks) when that arrived."""
    account = account or {}
    processes = account.get("processes", [])
    return {
        "event": "hard_killed" if account.get("hard_killed") else "expired",
        "nodeid": nodeid,
        "phase": phase,
        "deadline": seconds,
        "elapsed": round(elapsed, 4),
        "pids": [p["pid"] for p in processes],
        "signals": {str(p["pid"]): p["signals"] for p in processes if p["signals"]},
        "stacks": {str(p["pid"]): p["stack"] for p in processes if p.get("stack")},
        "native": {str(p["pid"]): p["native"] for p in processes if p.get("native")},
        "processes": [
            {"label": p.get("label", p["role"]), **{k: p[k] for k in _PROCESS_KEYS}}
            for p in processes
        ],
        "survivors": account.get("survivors", []),
        "interruptible": account.get("interruptible", True),
        "at": iso_time(account.get("wall_time")),
    }


_PROCESS_KEYS = ("pid", "ppid", "role", "cmdline")


def hard_killed(account: dict[str, Any]) -> Record:
    """A test whose process had to be killed: it never reported itself, so its deadline and
    elapsed time come from the watchdog's clock (``account`` is the watchdog's)."""
    armed_at = account.get("armed_at") or account["deadline_at"]
    ended_at = account.get("killed_at") or account["expired_at"]
    seconds = round(account["deadline_at"] - armed_at, 4)
    return expired(account["nodeid"], "unknown", seconds, ended_at - armed_at, account)


def ended_late(nodeid: str, seconds: float, elapsed: float) -> Record:
    """A test that ended after its deadline, before the watchdog's interrupt reached it."""
    record = expired(nodeid, "teardown", seconds, elapsed, None)
    record["late"] = True
    return record


def slow(nodeid: str, phase: str, seconds: float, elapsed: float) -> Record:
    return {
        "event": "slow", "nodeid": nodeid, "phase": phase,
        "deadline": seconds, "elapsed": round(elapsed, 4), "at": iso_time(),
    }  # fmt: skip


def leaked(
    nodeid: str, action: str, processes: list[dict[str, Any]], signals: dict[str, list[str]]
) -> Record:
    """Processes ``nodeid`` left running; ``signals`` is what ``action`` sent them."""
    return {
        "event": "leaked", "nodeid": nodeid, "phase": "teardown", "action": action,
        "pids": [p["pid"] for p in processes], "processes": processes, "signals": signals,
        "at": iso_time(),
    }  # fmt: skip


def leaked_threads(nodeid: str, action: str, threads: list[dict[str, Any]]) -> Record:
    """Busy non-daemon threads ``nodeid`` left (each ``{"name", "ident", "stack"}``)."""
    return {
        "event": "leaked_thread", "nodeid": nodeid, "phase": "teardown", "action": action,
        "threads": threads, "at": iso_time(),
    }  # fmt: skip


def not_run(nodeid: str) -> Record:
    return {"event": "not_run", "nodeid": nodeid, "phase": "setup", "at": iso_time()}


def exit_blocked(worker: str, threads: list[dict[str, Any]]) -> Record:
    """An xdist worker that cannot exit: the threads its tests left still running (each
    with the ``test`` that left it)."""
    return {"event": "exit_blocked", "worker": worker, "threads": threads, "at": iso_time()}


def deadline_text(record: Record) -> str:
    """``deadline 1 s``; for a learned deadline (the record's ``learned``), ``learned
    deadline 1 s: 10 x 0.1 s, longest of 5 runs``."""
    learned = record.get("learned")
    if learned:
        from pytest_expiry.history import Learned  # noqa: PLC0415 - learned deadlines only

        numbers = (learned["factor"], learned["longest"], learned["runs"], learned["floor"])
        return Learned(record["deadline"], *numbers).describe()
    return f"deadline {round(record['deadline'], 3):g} s"


def after_text(elapsed: float, seconds: float) -> str:
    """``after 1.02 s (deadline 1 s)``: how every message states an overrun."""
    return f"after {elapsed:.2f} s (deadline {round(seconds, 3):g} s)"
