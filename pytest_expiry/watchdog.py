"""The watchdog process: a timer server that wakes at the next deadline and escalates.

The pytest process (the controller, under xdist) launches it once per session
(:mod:`pytest_expiry.launcher`). It is a separate process so that nothing a test does (a C
call holding the GIL, a swallowed exception, a frozen main thread) can stop it. It runs until
its standard input reaches end-of-file, which happens when the session ends or when the
process that launched it dies, however it dies.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported at the first expiry: a watchdog that never fires starts lean
    from pytest_expiry.escalation import Escalation

from pytest_expiry.channel import EVENTS_NAME, STACKS_NAME
from pytest_expiry.inbox import ALL_SCOPES, ScopeRequest, SocketRequestQueue
from pytest_expiry.signals import ExpirySignals, parse_signals
from pytest_expiry.timer.api import TimerRequest, TimerServer, clock, expired_by_worker

__all__ = ["ExpiryServer", "main"]


_Key = tuple[Any, str]
_PARENT_CHECK = 0.5


class ExpiryServer(TimerServer):
    """Timers by ``(pid, scope)``; an expired one starts an :class:`Escalation`; a SLOW
    notice is written to the terminal when a scope passes its ``slow_at``."""

    def __init__(
        self,
        request_queue: SocketRequestQueue,
        signals: ExpirySignals,
        grace: float,
        directory: str,
        *,
        report_path: str | None = None,
        session_pid: int | None = None,
    ) -> None:
        super().__init__(request_queue, max_interval=60.0, daemon=True)
        self._queue = request_queue
        self._signals = signals
        self._grace = grace
        self._directory = directory
        self._session_pid = session_pid
        self._report_path = report_path
        self._events_path = os.path.join(directory, EVENTS_NAME)
        self._events_lock = threading.Lock()
        self._timers: dict[_Key, TimerRequest] = {}
        self._slow: dict[_Key, float] = {}
        self._escalations: dict[Any, Escalation] = {}

    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        for request in timer_requests:
            escalation = self._escalations.pop(request.worker_id, None)
            if escalation is not None:
                escalation.answered()
                self._queue.watch(request.worker_id, False)
            key = (request.worker_id, request.scope_id)
            if request.scope_id == ALL_SCOPES:
                self.clear_timers({request.worker_id})
            elif request.is_release:
                self._timers.pop(key, None)
                self._slow.pop(key, None)
            else:
                self._timers[key] = request
                slow_at = request.slow_at if isinstance(request, ScopeRequest) else None
                if slow_at:
                    self._slow[key] = slow_at

    def clear_timers(self, worker_ids: set[Any]) -> None:
        for key in [key for key in self._timers if key[0] in worker_ids]:
            del self._timers[key]
            self._slow.pop(key, None)

    def get_expired_timers(self, deadline: float) -> dict[Any, list[TimerRequest]]:
        return expired_by_worker(self._timers.values(), deadline)

    def next_expiration(self, after: float) -> float | None:
        times = [r.expiration_time for r in self._timers.values()] + list(self._slow.values())
        return min((t for t in times if t > after), default=None)

    def _run_watchdog(self) -> None:
        super()._run_watchdog()
        now = clock()
        for key, slow_at in list(self._slow.items()):
            if slow_at <= now:
                del self._slow[key]
                left = self._timers[key].expiration_time - now
                sys.stderr.write(
                    f"\npytest-expiry: SLOW {key[1]} is still running; it expires in {left:.1f} s\n"
                )
                sys.stderr.flush()

    def _reap_worker(self, worker_id: Any) -> bool:
        from pytest_expiry.escalation import Escalation, LadderSettings  # noqa: PLC0415

        settings = LadderSettings(
            self._grace, self._signals, os.path.join(self._directory, STACKS_NAME)
        )
        for key, request in list(self._timers.items()):
            if key[0] == worker_id and request.expiration_time <= clock():
                escalation = Escalation(request, settings, self._deliver, self._before_hard_kill)
                self._escalations[worker_id] = escalation
                self._queue.watch(worker_id, True)  # its answer must be seen at once
                escalation.start()
        return True

    def _deliver(self, pid: int, event: dict[str, Any]) -> bool:
        with self._events_lock, open(self._events_path, "a") as events:
            events.write(json.dumps(event) + "\n")
        return self._queue.send_event(pid, event)

    def _before_hard_kill(self, pid: int, event: dict[str, Any]) -> None:
        """The pytest process itself is about to be killed: nobody else is left to tell."""
        if pid != self._session_pid:
            return
        from pytest_expiry.report import (  # noqa: PLC0415
            ExpiryLog,
            describe_expiry,
            hard_kill_record,
        )

        record = hard_kill_record(event)
        record["signals"].setdefault(str(pid), []).append("SIGKILL")  # sent right after this
        if self._report_path:
            ExpiryLog([record]).write_json(self._report_path, exit_status=137)
        sys.stderr.write(
            f"\n{'=' * 30} pytest-expiry: session killed {'=' * 30}\n"
            f"{describe_expiry(record)}\n\n"
            f"The session ends here (exit status 137: SIGKILL). Run with --expiry-isolate "
            f"(pytest-xdist) to have such a test fail and the session carry on.\n"
        )
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the watchdog process: ``python -m pytest_expiry.watchdog SETTINGS``,
    SETTINGS a JSON object written by :mod:`pytest_expiry.launcher` (listen_fd, wake_fd,
    directory, grace, signals, session_pid, report). JSON rather than options: the watchdog
    starts during the session's own start-up, and argparse alone costs it 8 ms."""
    settings = json.loads((sys.argv[1:] if argv is None else argv)[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    queue = SocketRequestQueue(
        socket.socket(fileno=settings["listen_fd"]), socket.socket(fileno=settings["wake_fd"])
    )
    server = ExpiryServer(
        queue,
        parse_signals(settings["signals"]),
        float(settings["grace"]),
        settings["directory"],
        report_path=settings["report"],
        session_pid=settings["session_pid"],
    )
    server.start()
    _wait_for_the_session_to_end(settings["session_pid"])
    server.stop()
    for thread in threading.enumerate():  # escalations still reporting
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    import shutil  # noqa: PLC0415 - needed once, at the very end

    shutil.rmtree(settings["directory"], ignore_errors=True)


def _wait_for_the_session_to_end(session: int) -> None:
    """Until standard input closes (the session ended) or the launching process is gone.

    The second matters when the session was killed: a process a test forked (and so the
    pipe's write end) can outlive it, and its death then reparents this process.
    """
    while os.getppid() == session:  # given, not read here: it may be dead already
        readable, _, _ = select.select([sys.stdin], [], [], _PARENT_CHECK)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            return


if __name__ == "__main__":
    main()
