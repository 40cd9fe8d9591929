"""Starting and stopping the watchdog process, from the pytest side.

A session's files live in a fresh private directory (``tempfile.mkdtemp``: mode 0700):
the channel's sockets and ``scopes/`` (one slot per test process), ``stacks/`` (one dump
file per Python process under a scope) and ``events.jsonl`` (every escalation's outcome,
for the xdist controller and the JSON report).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from pytest_expiry.channel import EVENTS_NAME, bind_sockets, stacks_directory
from pytest_expiry.signals import ExpirySignals

__all__ = ["WatchdogProcess"]


class WatchdogProcess:
    """The pytest side's handle on its watchdog: where to reach it, and how to end it."""

    def __init__(self, directory: str, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process

    @classmethod
    def launch(
        cls, grace: float, signals: ExpirySignals, report: str | None = None
    ) -> WatchdogProcess:
        """Start a watchdog with a fresh private directory (mode 0700) and socket."""
        base = None if len(tempfile.gettempdir()) < 60 else "/tmp"
        directory = tempfile.mkdtemp(prefix="pytest-expiry-", dir=base)
        os.mkdir(stacks_directory(directory))
        try:
            listener, waker = bind_sockets(directory)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        try:
            fds = [listener.fileno(), waker.fileno()]
            settings = {
                "listen_fd": fds[0], "wake_fd": fds[1], "directory": directory,
                "grace": grace, "signals": signals.encode(), "session_pid": os.getpid(),
                "report": os.path.abspath(report) if report else None,
            }  # fmt: skip
            command = [sys.executable, "-m", "pytest_expiry.watchdog", json.dumps(settings)]
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, pass_fds=fds, start_new_session=True
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        finally:
            listener.close()
            waker.close()
        return cls(directory, process)

    def alive(self) -> bool:
        return self.process.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """Every event the watchdog recorded this session."""
        try:
            with open(os.path.join(self.directory, EVENTS_NAME)) as events:
                return [json.loads(line) for line in events if line.strip()]
        except OSError:
            return []

    def stop(self) -> None:
        """End the watchdog and remove its files. Every escalation's outcome has been awaited
        by then (or read from ``events.jsonl``), so nothing it could still do matters."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.terminate()
        try:
            self.process.wait(1.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
