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
import subprocess
import sys
import tempfile
import time
from typing import Any

from pytest_expiry import remote_accounts as accounts
from pytest_expiry.protocol.wire import EVENTS_NAME, STOP, bind_sockets, stacks_directory
from pytest_expiry.signals import ExpirySignals

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
        of a hard kill (:mod:`pytest_expiry.remote_accounts`), and it keeps that account after the
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
        stop_read, stop_write = os.pipe()
        try:
            fds = [listener.fileno(), waker.fileno(), stop_read]
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
        except BaseException:
            os.close(stop_write)
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            listener.close()
            waker.close()
            os.close(stop_read)
        return cls(directory, pid, stop_write)

    def events(self) -> list[dict[str, Any]]:
        """Every event the watchdog recorded this session."""
        try:
            with open(os.path.join(self.directory, EVENTS_NAME)) as events:
                return [json.loads(line) for line in events if line.strip()]
        except (OSError, ValueError):
            return []

    def stop(self) -> None:
        """Tell the watchdog the session is over, give it a moment to finish, and remove the
        session's files. Every escalation's outcome has been awaited by then (or read from
        ``events.jsonl``), so nothing it could still do matters."""
        with contextlib.suppress(OSError):
            os.write(self._stop_fd, STOP)
        with contextlib.suppress(OSError):
            os.close(self._stop_fd)
        if not self._wait_gone(_STOP_WAIT):
            self.kill()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """End a watchdog that does not answer (stopped, or wedged): SIGKILL, by its pidfd
        where there is one, so that a recycled pid is never hit."""
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
