"""A test stuck in C holding the GIL: before the watchdog kills it, each thread's native
frames are read (py-spy, the ``native`` extra, which the test extra installs) and shown above
its Python frames (issue #13)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pytest_expiry.stacks.native import find_native_unwinder

if TYPE_CHECKING:
    from tests.helpers import RunPytest

STUCK_IN_C = """
import ctypes


def test_waits_on_a_native_mutex_holding_the_gil():
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)  # zeroed: an unlocked default pthread mutex
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)


def test_after():
    pass
"""


@pytest.fixture(scope="module")
def py_spy() -> str:
    """py-spy, once it has been seen to read a process here (ptrace may be forbidden)."""
    unwinder = find_native_unwinder()
    if unwinder is None or not unwinder.endswith("py-spy"):
        pytest.skip("py-spy is not installed (pip install 'pytest-expiry[native]')")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for _ in range(50):  # until the interpreter is far enough to be read
            dump = subprocess.run(
                [unwinder, "dump", "--native", "--pid", str(child.pid)],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if dump.returncode == 0:
                return unwinder
            subprocess.run(["sleep", "0.1"], check=True)
        pytest.skip(f"py-spy cannot trace a process here: {dump.stderr.decode()[:200]}")
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ptrace and PyDLL(None): Linux")
def test_the_native_frames_of_a_worker_stuck_in_c_are_in_its_report(
    py_spy: str, pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_stuck=STUCK_IN_C)
    run = run_pytest("-n", "1", "--expiry=0.5", "--expiry-grace=0.3", "--expiry-report=report.json")
    run.result.assert_outcomes(failed=1, passed=1)
    assert "native frames: py-spy" in run.output
    run.result.stdout.re_match_lines(
        [
            r"--- native frames of pid \d+ \(xdist worker gw0\), most recent first ---",
            r'Thread \d+ \(\w+\): "MainThread"',
            r"    .*pthread_mutex_lock \(libc\.so.*\)",
        ]
    )
    native_section = run.output.split("--- native frames of pid", 1)[1]
    python_at = native_section.index("test_waits_on_a_native_mutex_holding_the_gil (test_stuck.py:")
    assert native_section.index("pthread_mutex_lock") < python_at  # native frames above
    document = json.loads((pytester.path / "report.json").read_text())
    (killed,) = [event for event in document["events"] if event["event"] == "hard_killed"]
    (frames,) = killed["native"].values()
    assert "pthread_mutex_lock" in frames and "ffi_call" in frames
