"""Native frames: what an unwinder's dump becomes in a report, and the bound on its time."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_expiry.protocol.client import ChannelClient
from pytest_expiry.signals import default_signals
from pytest_expiry.stacks import native
from pytest_expiry.watchdog.launch import WatchdogProcess

PY_SPY_NATIVE = """Process 41: python -m pytest
Python v3.11.7 (/usr/bin/python3.11)

Thread 41 (idle): "MainThread"
    pthread_mutex_lock (libc.so.6)
    ffi_call (libffi.so.8.1.2)
    PyCFuncPtr_call (_ctypes.c:4201)
    test_waits (test_c.py:7)
    pytest_pyfunc_call (_pytest/python.py:187)
    _multicall (pluggy/_execution.py:147)
Thread 42 (idle)
    read (libc.so.6)
"""

GDB = """[Thread debugging using libthread_db enabled]
0x00007f in __GI___wait4 () at wait4.c:30

Thread 1 (Thread 0x7f3 (LWP 8699) "python3"):
#0  0x00007f in __GI___clock_nanosleep () at clock_nanosleep.c:48
#1  0x00007f in __sleep (seconds=0) at sleep.c:55
"""


def test_a_py_spy_dump_keeps_each_threads_native_frames_down_to_its_first_python_frame() -> None:
    assert native._frames_only(PY_SPY_NATIVE).splitlines() == [
        'Thread 41 (idle): "MainThread"',
        "    pthread_mutex_lock (libc.so.6)",
        "    ffi_call (libffi.so.8.1.2)",
        "    PyCFuncPtr_call (_ctypes.c:4201)",
        "    test_waits (test_c.py:7)",
        "    ... 2 more frames",
        "Thread 42 (idle)",
        "    read (libc.so.6)",
    ]


def test_a_gdb_backtrace_keeps_its_threads_and_frames_without_gdbs_chatter() -> None:
    assert native._frames_only(GDB).splitlines() == [
        'Thread 1 (Thread 0x7f3 (LWP 8699) "python3"):',
        "#0  0x00007f in __GI___clock_nanosleep () at clock_nanosleep.c:48",
        "#1  0x00007f in __sleep (seconds=0) at sleep.c:55",
    ]


def fake_unwinder(tmp_path: Path, body: str) -> str:
    """An executable named gdb (so it is called the way gdb is) that runs ``body``."""
    path = tmp_path / "gdb"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_an_unwinder_that_does_not_answer_in_time_is_given_up_on(tmp_path: Path) -> None:
    slow = fake_unwinder(tmp_path, "exec sleep 30")
    start = time.monotonic()
    assert native.native_stacks([os.getpid(), os.getppid(), os.getpid()], slow, limit=0.3) == {}
    assert time.monotonic() - start < 2  # both given up at once, not one after the other


def test_an_unwinders_answer_is_kept_per_pid(tmp_path: Path) -> None:
    echo = fake_unwinder(tmp_path, 'echo "Thread 1 (x):"; echo "#0  f () from libc.so.6"')
    assert native.native_stacks([os.getpid()], echo) == {
        os.getpid(): "Thread 1 (x):\n#0  f () from libc.so.6"
    }


def test_an_unwinder_that_fails_gives_nothing(tmp_path: Path) -> None:
    failing = fake_unwinder(tmp_path, 'echo "#0 partial"; exit 1')
    assert native.native_stacks([os.getpid()], failing) == {}


@pytest.mark.parametrize("scope", ["0", "2"])
def test_tracing_is_left_alone_where_yama_does_not_restrict_it_to_ancestors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    (tmp_path / "ptrace_scope").write_text(scope + "\n")
    monkeypatch.setattr(native, "_YAMA_SCOPE", str(tmp_path / "ptrace_scope"))
    assert native.allow_tracing_by(os.getppid()) is False


def test_where_yama_restricts_tracing_the_watchdog_is_named_as_the_tracer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ptrace_scope").write_text("1\n")
    monkeypatch.setattr(native, "_YAMA_SCOPE", str(tmp_path / "ptrace_scope"))
    # PR_SET_PTRACER succeeds only on a kernel with Yama; without it prctl refuses it
    assert native.allow_tracing_by(os.getppid()) is os.path.exists(REAL_YAMA_SCOPE)


REAL_YAMA_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_reads_the_native_frames_of_a_process_stuck_in_c() -> None:
    child = subprocess.Popen([sys.executable, "-c", STUCK_IN_C], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"locked\n"
        frames = native.native_stacks([child.pid], str(shutil.which("gdb")), limit=20)
        if not frames:
            pytest.skip("gdb cannot attach to a process here (ptrace not permitted)")
        text = frames[child.pid]
        assert text.startswith("Thread 1 ") and "pthread_mutex_lock" in text, text
    finally:
        child.kill()
        child.wait()


STUCK_IN_C = """
import ctypes, sys
libc = ctypes.PyDLL(None)
mutex = ctypes.create_string_buffer(64)
libc.pthread_mutex_lock(mutex)
print("locked", flush=True)
libc.pthread_mutex_lock(mutex)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog is POSIX")
def test_the_tracer_a_test_process_names_is_its_real_watchdog() -> None:
    """The pid that ``allow_tracing_by`` gets is the watchdog's own: the process that will
    run the unwinder, not the launcher that bound the socket (the session itself)."""
    watchdog = WatchdogProcess.launch(1.0, default_signals())
    client = ChannelClient(watchdog.directory)
    try:
        assert client.watchdog_pid() == watchdog.pid != os.getpid()
        with open(f"/proc/{watchdog.pid}/cmdline", "rb") as cmdline:
            assert b"pytest_expiry.watchdog.main" in cmdline.read()
    finally:
        client.close()
        watchdog.stop()
