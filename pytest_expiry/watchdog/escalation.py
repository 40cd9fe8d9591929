"""The escalation ladder for one expired scope, run by the watchdog in a thread of its own.

1. snapshot the test process's descendants;
2. gather every thread's stack of the test process and of each Python descendant;
3. interrupt the test process: its main thread raises ``Expired`` where it hangs;
4. end the descendants the test started (not those running before its scope was armed, which
   a session's or a module's fixture shares with later tests): SIGTERM, ``grace`` seconds,
   SIGKILL;
5. if the test process has not answered (re-armed or released its scope) within ``grace``
   of the interrupt, it cannot be interrupted: SIGKILL it and whatever it started.

The outcome is an event (a JSON-ready dict) sent back to the test process.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from pytest_expiry import procs
from pytest_expiry.labels import label_descendant
from pytest_expiry.signals import ExpirySignals, signal_main_thread
from pytest_expiry.stacks.collect import catches, collect_stacks
from pytest_expiry.timer.api import TimerRequest, clock

__all__ = ["Escalation", "LadderSettings"]

# How long a process that cannot be interrupted is given for the release of its scope to
# be read, before anything is ended: a scope released just after its deadline wakes the
# watchdog, but under load its timer thread may read the slot after the stacks are in.
_LATE_RELEASE = 0.25


@dataclass(frozen=True)
class LadderSettings:
    grace: float
    signals: ExpirySignals
    stacks_directory: str
    unwinder: str | None = None  # py-spy, for processes that hold no handler of ours
    native: str | None = None  # py-spy, gdb or eu-stack: native frames before a hard kill


def _describe(process: psutil.Process, role: str) -> dict[str, Any]:
    try:
        with process.oneshot():
            cmdline = process.cmdline()
            ppid = process.ppid()
    except psutil.Error:
        cmdline, ppid = [], None
    return {"pid": process.pid, "ppid": ppid, "role": role, "cmdline": cmdline}


def _started_before_the_test(tree: list[psutil.Process], armed_at: float | None) -> set[int]:
    """The descendants that were running before the test's scope was armed: a session's or
    a module's fixture started them for later tests too. The test's expiry leaves them be."""
    if not armed_at:
        return set()
    return {p.pid for p in tree if procs.started_before(p.pid, armed_at)}


def _label(records: list[dict[str, Any]], worker: psutil.Process, shared: set[int]) -> None:
    """Say what each descendant is (:mod:`pytest_expiry.labels`)."""
    by_pid = {record["pid"]: record for record in records}
    for record in records:
        if record["pid"] == worker.pid:
            continue
        parent = by_pid.get(record["ppid"], {}).get("cmdline") or _cmdline(record["ppid"])
        record["label"] = label_descendant(record["cmdline"], parent, record["stack"])
        if record["pid"] in shared:
            record["label"] += ", started before the test: left running"


def _cmdline(pid: int) -> list[str]:
    """The command line of a process left out of the records (the fork server is shared)."""
    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


class Escalation:
    """Runs the ladder for ``request`` once; :meth:`answered` tells it the test process
    has spoken since the interrupt."""

    def __init__(
        self,
        request: TimerRequest,
        settings: LadderSettings,
        deliver: Callable[[int, dict[str, Any]], bool],
        before_hard_kill: Callable[[int, dict[str, Any]], None],
    ) -> None:
        self.request = request
        self._settings = settings
        self._deliver = deliver
        self._before_hard_kill = before_hard_kill
        self._answer = threading.Event()

    def answered(self) -> None:
        """The test process released or re-armed its scope: it is alive and responsive."""
        self._answer.set()

    def start(self) -> None:
        # not a daemon: the watchdog must finish reporting even when its session just died
        name = f"expiry-{self.request.worker_id}"
        threading.Thread(target=self.run, name=name, daemon=False).start()

    def run(self) -> None:
        worker = procs.identify(int(self.request.worker_id), self.request.worker_started)
        if worker is None:
            return
        event = self._climb(worker)
        if event is not None:
            self._deliver(worker.pid, event)

    def _climb(self, worker: psutil.Process) -> dict[str, Any] | None:
        expired_at = clock()
        tree = procs.tree_of(worker)
        shared = _started_before_the_test(tree, getattr(self.request, "armed_at", None))
        records = [_describe(worker, "test process")] + [_describe(p, "descendant") for p in tree]
        stacks = collect_stacks(
            [worker, *tree],
            self._settings.signals.stacks,
            self._settings.stacks_directory,
            self._settings.unwinder,
        )
        # without a handler (reset by the test, or the process exec'd, or its session ended
        # and put the old one back) the interrupt would kill it with nothing said: it cannot
        # be interrupted, so the hard path it is, unless its scope ended meanwhile
        interruptible = catches(worker.pid, self._settings.signals.interrupt)
        if self._answer.wait(0.0 if interruptible else _LATE_RELEASE):
            return None  # the scope ended while the stacks were gathered: no expiry
        interrupted_at = clock()
        if interruptible:
            with contextlib.suppress(OSError):
                signal_main_thread(worker.pid, self._settings.signals.interrupt)
        ending = procs.end_processes([p for p in tree if p.pid not in shared], self._settings.grace)
        waited = clock() - interrupted_at
        patience = max(0.0, self._settings.grace - waited) if interruptible else 0.0
        hard_killed = not self._answer.wait(patience)
        event = {
            "event": "expired",
            "nodeid": self.request.scope_id,
            "pid": worker.pid,
            "armed_at": getattr(self.request, "armed_at", None),
            "deadline_at": self.request.expiration_time,
            "expired_at": expired_at,
            "killed_at": clock() if hard_killed else None,
            "stacks_seconds": round(interrupted_at - expired_at, 4),
            "processes": records,
            "survivors": ending.survivors,
            "hard_killed": hard_killed,
            "interruptible": interruptible,
            "wall_time": time.time(),
        }
        for record in records:
            record["stack"] = stacks.get(record["pid"])
            record["signals"] = ending.signals.get(record["pid"], [])
        _label(records, worker, shared)
        if hard_killed:
            self._read_native_frames(worker, records)
            # told first: whoever reads the killed process's output may stop at its death
            self._before_hard_kill(worker.pid, event)
            late = procs.end_processes([worker, *procs.tree_of(worker)], grace=0)
            for record in records:
                record["signals"] += late.signals.get(record["pid"], [])
        return event

    def _read_native_frames(self, worker: psutil.Process, records: list[dict[str, Any]]) -> None:
        """Each thread's native frames, for the test process (stuck in C: its Python stack
        ends at the call) and the descendants still alive, bounded by ``native.LIMIT``."""
        if self._settings.native is None:
            return
        from pytest_expiry.stacks.native import native_stacks  # noqa: PLC0415 - the rare path

        alive = [worker.pid] + [p.pid for p in procs.tree_of(worker)]
        frames = native_stacks(alive, self._settings.native)
        for record in records:
            if record["pid"] in frames:
                record["native"] = frames[record["pid"]]
