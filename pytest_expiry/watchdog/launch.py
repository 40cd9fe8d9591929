"""Starting and stopping the watchdog process, from the pytest side.

A session's files live in a fresh private directory (``tempfile.mkdtemp``: mode 0700):
the channel's sockets and ``scopes/`` (one slot per test process), ``stacks/`` (one dump
file per Python process under a scope) and ``events.jsonl`` (every escalation's outcome,
for the xdist controller and the JSON report).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from pytest_expiry.clock import clock
from pytest_expiry.protocol.wire import (
    DRAIN_INTERVAL,
    EVENTS_NAME,
    HEARTBEAT,
    HEARTBEAT_NAME,
    PID_NAME,
    STOP,
    bind_sockets,
    stacks_directory,
)
from pytest_expiry.signals import ExpirySignals
from pytest_expiry.xdist import accounts

__all__ = ["WatchdogProcess"]


_DETACH = '"$@" </dev/null >/dev/null & echo $!'
"""The watchdog is started by a short-lived shell, so that it is not a child of the test
process (a test that lists its children, or waits for them all, never sees it)."""
_STOP_WAIT = 1.0


class WatchdogProcess:
    """The pytest side's handle on its watchdog: where to reach it, and how to end it."""

    def __init__(self, directory: str, pid: int, stop_fd: int) -> None:
        self.directory = directory
        self.pid = pid
        self._stop_fd = stop_fd
        self._pidfd = _open_pidfd(pid)
        self._killed = False

    @classmethod
    def launch(
        cls,
        grace: float,
        signals: ExpirySignals,
        report: str | None = None,
        child_stacks: str = "auto",
        worker_of: tuple[str, str] | None = None,
    ) -> WatchdogProcess:
        """Start a watchdog with a fresh private directory (mode 0700) and socket.

        ``worker_of`` (nonce, worker id): the watchdog of an xdist worker that cannot reach
        its controller's. Its directory is then where the controller looks for the account
        of a hard kill (:mod:`pytest_expiry.xdist.accounts`), and it keeps that account after the
        worker is gone until the controller has read it."""
        parent: str | None = None if len(tempfile.gettempdir()) < 60 else "/tmp"
        prefix, linger = "pytest-expiry-", 0.0
        if worker_of is not None:
            with contextlib.suppress(OSError):  # else no account, but a watchdog all the same
                parent, prefix = accounts.private_base(), accounts.prefix(*worker_of)
                linger = accounts.LINGER
        directory = tempfile.mkdtemp(prefix=prefix, dir=parent)
        os.mkdir(stacks_directory(directory))
        try:
            listener, waker = bind_sockets(directory)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        # the stop word goes one way; the watchdog's "an event was recorded" the other
        session_end, watchdog_end = (end.detach() for end in socket.socketpair())
        try:
            fds = [listener.fileno(), waker.fileno(), watchdog_end]
            settings = {
                "listen_fd": fds[0], "wake_fd": fds[1], "stop_fd": fds[2],
                "directory": directory, "grace": grace, "signals": signals.encode(),
                "session_pid": os.getpid(), "session_token": _session_token(),
                "report": os.path.abspath(report) if report else None,
                "child_stacks": child_stacks, "worker": worker_of is not None,
                "linger": linger,
            }  # fmt: skip
            command = [sys.executable, "-m", "pytest_expiry.watchdog.main", json.dumps(settings)]
            shell = subprocess.run(
                ["/bin/sh", "-c", _DETACH, "sh", *command],
                pass_fds=fds, start_new_session=True, stdout=subprocess.PIPE, check=True,
            )  # fmt: skip
            pid = int(shell.stdout.split()[-1])
            _write_pid(directory, pid)
        except BaseException:
            os.close(session_end)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            listener.close()
            waker.close()
            os.close(watchdog_end)
        return cls(directory, pid, session_end)

    def await_event(self, timeout: float) -> None:
        """Wait until the watchdog has recorded an event since the last call (at once if it
        has), or ``timeout`` seconds; then read :meth:`events`. Nothing is waited for once
        the session has stopped the watchdog."""
        if self._stop_fd < 0:
            return
        try:
            readable, _, _ = select.select([self._stop_fd], [], [], max(0.0, timeout))
            while readable and os.read(self._stop_fd, 4096) and _ready(self._stop_fd):
                pass  # one word per event: all of them are read at once
        except (OSError, ValueError):
            return

    def events(self) -> list[dict[str, Any]]:
        """Every event the watchdog recorded this session."""
        return accounts.read_events(os.path.join(self.directory, EVENTS_NAME))

    def stop(self) -> None:
        """Tell the watchdog the session is over. Every escalation's outcome has been awaited
        by then (or read from ``events.jsonl``), so nothing it could still do matters.

        A watchdog that runs (alive, not killed, and its heartbeat is fresh: it woke within
        two drains, or was launched that recently) is not waited for: it ends its escalations,
        removes the session's files and exits by itself, a few milliseconds after reading the
        stop word (or after its start-up, if the session was shorter than that). One that does
        not run (stopped, wedged, dead or killed) gets ``_STOP_WAIT`` to exit, is killed, and
        its files are removed here."""
        with contextlib.suppress(OSError):
            os.write(self._stop_fd, STOP)
        with contextlib.suppress(OSError):
            os.close(self._stop_fd)
        self._stop_fd = -1
        running = not self._killed and not self._wait_gone(0) and self._running()
        if not running and not self._wait_gone(_STOP_WAIT):
            self.kill()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if not running:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _running(self) -> bool:
        """Whether the watchdog's heartbeat is fresh (see :mod:`pytest_expiry.protocol.wire`)."""
        try:
            fd = os.open(os.path.join(self.directory, HEARTBEAT_NAME), os.O_RDONLY)
        except OSError:
            return False
        try:
            data = os.pread(fd, HEARTBEAT.size, 0)
        except OSError:
            return False
        finally:
            os.close(fd)
        if len(data) != HEARTBEAT.size:
            return False
        return bool(clock() - HEARTBEAT.unpack(data)[0] <= 2 * DRAIN_INTERVAL)

    def kill(self) -> None:
        """End a watchdog that does not answer (stopped, or wedged): SIGKILL, by its pidfd
        where there is one, so that a recycled pid is never hit."""
        self._killed = True  # it cannot remove the session's files: stop() does
        with contextlib.suppress(OSError):
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            elif _is_watchdog(self.pid):
                os.kill(self.pid, signal.SIGKILL)

    def _wait_gone(self, timeout: float) -> bool:
        if self._pidfd is not None:
            return bool(select.select([self._pidfd], [], [], timeout)[0])
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not _is_watchdog(self.pid):
                return True
            time.sleep(0.01)
        return False


def _write_pid(directory: str, pid: int) -> None:
    """The watchdog's pid where the test processes read it (to let it trace them)."""
    fd = os.open(os.path.join(directory, PID_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(str(pid))


def _ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _is_watchdog(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"pytest_expiry.watchdog.main" in cmdline.read()
    except OSError:
        return False


def _session_token() -> str | None:
    """This session's token in the lineage variable (processes its tests start carry it)."""
    from pytest_expiry import lineage  # noqa: PLC0415

    return os.environ.get(lineage.VARIABLE, "").split(",")[-1] or None
