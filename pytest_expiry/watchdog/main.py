"""The watchdog process: a timer server that wakes at the next deadline and escalates.

The pytest process (the controller, under xdist) launches it once per session
(:mod:`pytest_expiry.watchdog.launch`). It is a separate process so that nothing a test does (a C
call holding the GIL, a swallowed exception, a frozen main thread) can stop it. It runs until
the session writes the stop word on its stop socket, or until the session's process is gone,
however it went (a pidfd tells at once where there is one). It is not a child of the session:
the launcher detaches it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported at the first expiry: a watchdog that never fires starts lean
    from pytest_expiry.watchdog.escalation import Escalation

import psutil

from pytest_expiry import procs
from pytest_expiry.protocol.server import ALL_SCOPES, SocketRequestQueue
from pytest_expiry.protocol.wire import EVENTS_NAME, RECORDED, STACKS_NAME, STOP
from pytest_expiry.signals import ExpirySignals, parse_signals
from pytest_expiry.timer.api import TimerRequest, clock
from pytest_expiry.timer.table import TimerTable

__all__ = ["ExpiryServer", "main"]


_PARENT_CHECK = 0.5


class ExpiryServer(TimerTable):
    """Timers by ``(pid, scope)``; an expired one starts an :class:`Escalation`."""

    def __init__(
        self,
        request_queue: SocketRequestQueue,
        signals: ExpirySignals,
        grace: float,
        directory: str,
        *,
        report_path: str | None = None,
        session_pid: int | None = None,
        child_stacks: str = "auto",
        notify_fd: int | None = None,
    ) -> None:
        super().__init__(request_queue, max_interval=60.0, daemon=True)
        self._queue = request_queue
        self._signals = signals
        self._grace = grace
        self._directory = directory
        self._session_pid = session_pid
        self._child_stacks = child_stacks
        self._report_path = report_path
        self._events_path = os.path.join(directory, EVENTS_NAME)
        self._events_lock = threading.Lock()
        self._notify = socket.socket(fileno=notify_fd) if notify_fd is not None else None
        self._escalations: dict[Any, Escalation] = {}

    def register_timers(self, timer_requests: list[TimerRequest]) -> None:
        """Any request of a process whose scope is being escalated is its answer."""
        for request in timer_requests:
            escalation = self._escalations.pop(request.worker_id, None)
            if escalation is not None:
                escalation.answered()
                self._queue.watch(request.worker_id, False)
            if request.scope_id == ALL_SCOPES:
                self.clear_timers({request.worker_id})
            else:
                super().register_timers([request])

    def _reap_worker(self, worker_id: Any) -> bool:
        from pytest_expiry.stacks.native import find_native_unwinder  # noqa: PLC0415
        from pytest_expiry.watchdog.escalation import Escalation, LadderSettings  # noqa: PLC0415

        unwinder = None
        if self._child_stacks == "auto":
            from pytest_expiry.stacks.unwinder import find_unwinder  # noqa: PLC0415

            unwinder = find_unwinder()
        settings = LadderSettings(
            self._grace,
            self._signals,
            os.path.join(self._directory, STACKS_NAME),
            unwinder,
            find_native_unwinder(),
        )
        for key, request in list(self._timers.items()):
            if key[0] == worker_id and request.expiration_time <= clock():
                escalation = Escalation(request, settings, self._deliver, self._before_hard_kill)
                self._escalations[worker_id] = escalation
                self._queue.watch(worker_id, True)  # its answer must be seen at once
                escalation.start()
        return True

    def _deliver(self, pid: int, event: dict[str, Any]) -> bool:
        self._record(event)
        return self._queue.send_event(pid, event)

    def _record(self, event: dict[str, Any]) -> None:
        """Append ``event`` to the session's event log, and tell the session's process (the
        xdist controller waits for the account of a worker it saw die)."""
        with self._events_lock:
            line = (json.dumps(event) + "\n").encode()
            descriptor = os.open(self._events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                while line:  # one write, unless the disk is full or a signal cuts it short
                    line = line[os.write(descriptor, line) :]
            finally:
                os.close(descriptor)
            # full (nobody reads) or gone (the session ended): the log holds it all the same
            if self._notify is not None:
                with contextlib.suppress(OSError):
                    self._notify.send(RECORDED, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)

    def _before_hard_kill(self, pid: int, event: dict[str, Any]) -> None:
        """A test process is about to be killed. Its killing is logged first, so that whoever
        sees it die (the xdist controller) knows at once to wait for the account; and if it
        is the session itself, nobody else is left to tell: the report is written here."""
        self._record({"event": "killing", "nodeid": event["nodeid"], "pid": pid})
        if pid != self._session_pid:
            return
        from pytest_expiry.record import hard_killed  # noqa: PLC0415
        from pytest_expiry.report.jsonfile import write_json  # noqa: PLC0415
        from pytest_expiry.report.terminal import describe_expiry  # noqa: PLC0415

        record = hard_killed(event)
        record["signals"].setdefault(str(pid), []).append("SIGKILL")  # sent right after this
        if self._report_path:
            write_json(self._report_path, [record], exit_status=137)
        sys.stderr.write(
            f"\n{'=' * 30} pytest-expiry: session killed {'=' * 30}\n"
            f"{describe_expiry(record)}\n\n"
            f"The session ends here (exit status 137: SIGKILL). Run with --expiry-isolate "
            f"(pytest-xdist) to have such a test fail and the session carry on.\n"
        )
        sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the watchdog process: ``python -m pytest_expiry.watchdog.main SETTINGS``,
    SETTINGS a JSON object written by :mod:`pytest_expiry.watchdog.launch` (listen_fd, wake_fd,
    stop_fd, directory, grace, signals, session_pid, session_token, report, child_stacks,
    worker: the watchdog of an xdist worker, not of a session; linger: how long it keeps
    the account of a hard kill of that worker for its controller). JSON rather
    than options: the watchdog starts during the session's own start-up, and argparse alone
    costs it 8 ms."""
    settings = json.loads((sys.argv[1:] if argv is None else argv)[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    session = _Session(int(settings["session_pid"]), int(settings["stop_fd"]))
    queue = SocketRequestQueue(
        socket.socket(fileno=settings["listen_fd"]), socket.socket(fileno=settings["wake_fd"])
    )
    server = ExpiryServer(
        queue,
        parse_signals(settings["signals"]),
        float(settings["grace"]),
        settings["directory"],
        report_path=settings["report"],
        session_pid=None if settings.get("worker") else session.pid,
        child_stacks=settings.get("child_stacks", "auto"),
        notify_fd=os.dup(int(settings["stop_fd"])),  # the session may close its own copy
    )
    server.start()
    stopped = session.wait()
    server.stop()
    for thread in threading.enumerate():  # escalations still reporting
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    if not stopped and settings.get("session_token"):
        _end_what_the_session_left(settings["session_token"], session.started)
    if not stopped and settings.get("linger"):
        _keep_the_account(settings["directory"], float(settings["linger"]))
    _remove_tree(settings["directory"])
    if argv is None:  # the process: the session waits for its exit, which need not tidy up
        _exit_now()


def _remove_tree(path: str) -> None:
    """Remove the session's directory (``shutil.rmtree`` would import three compression
    modules to do it, at the moment the session waits for this process to exit)."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _exit_now() -> None:
    """End the process at once: every thread was joined and every file written, and the
    interpreter's own finalization (tens of milliseconds) would only delay the session,
    which waits for this exit."""
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(0)


class _Session:
    """The process that launched this watchdog, by identity (pid and start time)."""

    def __init__(self, pid: int, stop_fd: int) -> None:
        self.pid = pid
        self._stop_fd: int | None = stop_fd
        self.started = procs.start_time(pid) or 0.0
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def alive(self) -> bool:
        return bool(self.started) and procs.start_time(self.pid) == self.started

    def wait(self) -> bool:
        """Until the session says it is over (True) or its process is gone (False).

        The stop socket closing without the word is not the end: the session may have closed
        its descriptors, or exec'd another program, and its armed scope still holds."""
        # a pidfd says when the session exits: nothing to poll (an idle watchdog sleeps)
        check = None if self._pidfd is not None else _PARENT_CHECK
        while self.alive():
            watched = [fd for fd in (self._stop_fd, self._pidfd) if fd is not None]
            readable, _, _ = select.select(watched, [], [], check)
            if self._stop_fd is not None and self._stop_fd in readable:
                data = os.read(self._stop_fd, 64)
                if STOP in data:
                    return True
                if not data:
                    os.close(self._stop_fd)
                    self._stop_fd = None
            if self._pidfd is not None and self._pidfd in readable:
                # it exited: unreaped, a zombie keeps its start time, but it is gone (and its
                # parent may be reading our output to its end before it reaps it)
                return False
        return False


def _keep_the_account(directory: str, linger: float) -> None:
    """An xdist worker's own watchdog that hard-killed its worker keeps its events until
    the controller has read them (:func:`pytest_expiry.xdist.accounts.collect` marks the
    directory), for at most ``linger`` seconds: the worker could tell nobody."""
    from pytest_expiry.xdist.accounts import COLLECTED, read_events  # noqa: PLC0415

    events = read_events(os.path.join(directory, EVENTS_NAME))
    killed = any(event.get("event") == "killing" for event in events)
    end = clock() + linger
    while killed and clock() < end and not os.path.exists(os.path.join(directory, COLLECTED)):
        select.select([], [], [], 0.05)


def _end_what_the_session_left(token: str, since: float) -> None:
    """The session died (SIGTERM from a CI runner, SIGKILL): end the processes its tests
    started that still run, as an interrupted session (Ctrl-C) does for itself."""
    # read directly, not with lineage.tokens: its wait on empty environments (a process
    # mid-exec) would cost 50 ms for each kernel thread, and this runs over every process
    from pytest_expiry.lineage import VARIABLE  # noqa: PLC0415

    mark = f"{VARIABLE}=".encode()
    left = []
    for process in psutil.process_iter():
        try:
            if (procs.start_time(process.pid) or 0.0) < since or procs.is_protected(process.pid):
                continue
            with open(f"/proc/{process.pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except (OSError, psutil.Error):
            continue
        for variable in variables:
            if variable.startswith(mark) and token.encode() in variable[len(mark) :].split(b","):
                left.append(process)
    if left:
        procs.end_processes(left, grace=1.0)


if __name__ == "__main__":
    main()
