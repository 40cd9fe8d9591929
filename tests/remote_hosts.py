"""Stand-ins for remote hosts: an execnet socket server (``tests/remote_server.py``) in a
mount namespace of its own, whose ``/tmp`` is a fresh tmpfs. A worker there cannot see its
controller's watchdog directory, as on another machine. Only the test directory is shared
(bind-mounted at the same path, as a network file system would share it), so the worker
finds the tests with ``--tx socket=127.0.0.1:PORT//chdir=DIR``.

Needs root (or CAP_SYS_ADMIN) and ``unshare``: :func:`hosts_unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RemoteHost", "hosts_unavailable", "start_remote_host"]

SERVER = Path(__file__).with_name("remote_server.py")

# Mount a tmpfs at DIR/.host, put DIR (and every other directory to keep: the interpreter's
# prefix and this repository, where they live under /tmp) at its own path inside it, then move
# that tmpfs over /tmp: the namespace's /tmp holds nothing else, as a share would.
_PRIVATE_TMP = """
set -e
dir=$1; shift
mkdir -p "$dir/.host"
mount -t tmpfs tmpfs "$dir/.host"
while [ "$1" != "--" ]; do
    case "$1" in /tmp/*)
        mkdir -p "$dir/.host/${1#/tmp/}"
        mount --bind "$1" "$dir/.host/${1#/tmp/}";;
    esac
    shift
done
shift
mount --move "$dir/.host" /tmp
cd "$dir"
exec "$@"
"""
_UNSHARE = ["unshare", "--mount", "--propagation", "private"]
_START_PATIENCE = 15.0


@functools.cache
def hosts_unavailable() -> str | None:
    """Why a private-/tmp host cannot be made here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "private mount namespaces are Linux only"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        [*_UNSHARE, "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode:
        return f"cannot mount a private /tmp (needs root): {probe.stderr.strip()}"
    return None


def _kept(directory: Path) -> list[str]:
    """What the host still sees of this one's ``/tmp``: the test directory, and what it needs
    to run (the interpreter's prefix, this repository) when those live there too."""
    return [str(directory), sys.prefix, str(SERVER.parent.parent)]


@dataclass
class RemoteHost:
    """A running stand-in host: its ``--tx`` spec, and :meth:`close` to end it."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def spec(self) -> str:
        return f"socket={self.address}//chdir={self.directory}"

    def close(self) -> None:
        """End the server and every worker it forked (their process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_remote_host(directory: Path, env: dict[str, str], *options: str) -> RemoteHost:
    """Start a host serving ``directory`` on a free loopback port (its own process group,
    so that :meth:`RemoteHost.close` ends all of it). ``env``: the server's environment
    (its ``TMPDIR`` is set to ``/tmp``, which is private there); ``options``: the
    server's (``--thread``)."""
    command = [sys.executable, str(SERVER), "127.0.0.1:0", *options]
    process = subprocess.Popen(
        [
            *_UNSHARE,
            "sh",
            "-c",
            _PRIVATE_TMP,
            "sh",
            str(directory),
            *_kept(directory),
            "--",
            *command,
        ],
        env={**env, "TMPDIR": "/tmp"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    end = time.monotonic() + _START_PATIENCE
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < end and process.poll() is None:
        if select.select([process.stdout], [], [], 0.1)[0]:
            line += os.read(process.stdout.fileno(), 100)
    host = RemoteHost(directory, 0, process)
    if not line.startswith(b"listening "):
        host.close()
        raise RuntimeError(f"the stand-in host did not start: {line!r}")
    host.port = int(line.split()[1])
    return host
