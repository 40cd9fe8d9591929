"""``lineage.LastPid``: the last pid the kernel allocated, read through a descriptor of ours
that costs the test process nothing it could notice (Linux only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pytest_expiry.lineage import LastPid, pid_source

pytestmark = pytest.mark.skipif(pid_source() is None, reason="no /proc to read the last pid from")

IN_A_THREADED_PROCESS = textwrap.dedent(
    """
    import json, os, threading
    from pytest_expiry.lineage import LastPid

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
