"""``lastpid.LastPid``: the last pid the kernel allocated, read through a descriptor of ours
that costs the test process nothing it could notice (Linux only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_expiry.lastpid import LastPid, pid_source

pytestmark = pytest.mark.skipif(pid_source() is None, reason="no /proc to read the last pid from")

IN_A_THREADED_PROCESS = textwrap.dedent(
    """
    import json, os, threading
    from pytest_expiry.lastpid import LastPid

    def table_size():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("FDSize:"))

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()  # as in an xdist worker's
    before = table_size()
    last = LastPid()
    after = table_size()
    target = os.path.realpath(last._path)
    ours = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                ours.append(int(fd))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    print(json.dumps({"before": before, "after": after, "ours": ours}))
    """
)


# a process's table covers the highest descriptor open in its parent when it forked: run the
# script one step removed, from a process whose pytest-inherited descriptors exec closed
ONE_STEP_REMOVED = (
    "import os, subprocess, sys; "
    "sys.exit(subprocess.call([sys.executable, '-c', os.environ['SCRIPT']]))"
)


def test_its_descriptor_fits_the_table_a_process_starts_with() -> None:
    """The descriptor is placed inside the process's descriptor table: growing the table
    of a multi-threaded process waits for an RCU grace period (10-25 ms per xdist worker)."""
    environment = {**os.environ, "SCRIPT": IN_A_THREADED_PROCESS}
    found = subprocess.run(
        [sys.executable, "-c", ONE_STEP_REMOVED], env=environment,
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    seen = json.loads(found.stdout)
    if seen["before"] > 256:  # a descriptor this high is inherited from further up
        pytest.skip(f"the process started with a table of {seen['before']}: nothing to prove")
    assert seen["after"] == seen["before"], seen
    assert len(seen["ours"]) == 1 and seen["ours"][0] < seen["before"], seen


def test_the_value_follows_the_pids_the_kernel_allocates() -> None:
    last = LastPid()
    try:
        child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                               capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
        assert last.read() >= int(child.stdout) or last.read() < 300, "pids wrapped meanwhile"
    finally:
        last.close()


def test_a_descriptor_a_test_put_in_its_place_is_neither_read_nor_closed() -> None:
    """A test that closes every descriptor may get our number back for a file of its own:
    that file stays the test's, and the pid is read through a new descriptor."""
    last = LastPid()
    ours = last._fd
    os.close(ours)
    theirs = os.open(os.devnull, os.O_RDONLY)
    try:
        if theirs != ours:
            os.dup2(theirs, ours)
            os.close(theirs)
        assert last.read() > 0
        assert os.readlink(f"/proc/self/fd/{ours}") == os.devnull, "the test's file is intact"
        last.close()
        assert os.readlink(f"/proc/self/fd/{ours}") == os.devnull, "and still open"
    finally:
        os.close(ours)


def test_a_peek_through_a_descriptor_a_test_put_in_its_place_changes_nothing_of_it(
    tmp_path: Path,
) -> None:
    """``peek`` does not check whose the number is: it may read the test's file, but moves
    no offset, and a later ``read`` notices (``opens``) and reads through a new descriptor."""
    pidfile = os.path.join(str(tmp_path), "daemon.pid")
    with open(pidfile, "w") as written:
        written.write("12345\n")
    last = LastPid()
    ours, opened = last._fd, last.opens
    os.close(ours)
    theirs = os.open(pidfile, os.O_RDONLY)
    try:
        if theirs != ours:
            os.dup2(theirs, ours)
            os.close(theirs)
        os.lseek(ours, 2, os.SEEK_SET)
        assert last.peek() == 12345  # the file's text: why a peek is confirmed by a read
        assert os.lseek(ours, 0, os.SEEK_CUR) == 2
        assert last.opens == opened
        child = _a_new_pid()
        assert last.read() >= child or last.read() < 300, "pids wrapped meanwhile"
        assert last.opens == opened + 1 and last._fd != ours
        assert os.lseek(ours, 0, os.SEEK_CUR) == 2 and os.read(ours, 10) == b"345\n"
        last.close()
    finally:
        os.close(ours)


def test_a_peek_through_a_pipe_in_its_place_reads_through_a_new_descriptor() -> None:
    """A pipe refuses ``pread``: nothing is taken from it, and the value is the real one."""
    last = LastPid()
    ours = last._fd
    os.close(ours)
    reader, writer = os.pipe()
    try:
        os.write(writer, b"data")
        if reader != ours:
            os.dup2(reader, ours)
        child = _a_new_pid()
        assert last.peek() >= child or last.peek() < 300, "pids wrapped meanwhile"
        assert os.read(ours, 10) == b"data"
        last.close()
    finally:
        for fd in {reader, writer, ours}:
            os.close(fd)


def _a_new_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    return int(child.stdout)
