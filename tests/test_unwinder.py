"""py-spy's dumps read like faulthandler's, named threads or not; it reads a bounded number
of processes, and says so of the others."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from pytest_expiry.stacks import unwinder
from pytest_expiry.stacks.unwinder import _as_faulthandler, find_unwinder, unwind

NAMED = """Process 41: python -m pytest
Python v3.11.7 (/usr/bin/python3.11)

Thread 0x7F01 (idle): "MainThread"
    wait (threading.py:320)
    test_x (test_x.py:5)
Thread 0x7F02 (active): "worker"
    spin (test_x.py:9)
"""

UNNAMED = """Process 3836: python3 -c import time; time.sleep(30)
Python v3.11.7 (/usr/bin/python3.11)

Thread 3836 (idle)
    <module> (<string>:1)
"""


def test_named_threads_keep_their_order_and_the_main_one_is_current() -> None:
    assert _as_faulthandler(NAMED, 41).splitlines() == [
        "Current thread 0x7F01 (idle, most recent call first):",
        '  File "threading.py", line 320 in wait',
        '  File "test_x.py", line 5 in test_x',
        "",
        "Thread 0x7F02 (active, most recent call first):",
        '  File "test_x.py", line 9 in spin',
    ]


def test_an_unnamed_thread_whose_id_is_the_pid_is_the_main_one() -> None:
    assert _as_faulthandler(UNNAMED, 3836).splitlines() == [
        "Current thread 3836 (idle, most recent call first):",
        '  File "<string>", line 1 in <module>',
    ]


def test_a_dump_without_threads_reads_as_nothing() -> None:
    assert _as_faulthandler("Error: failed to find python interpreter\n", 7) == ""


@pytest.fixture
def sleepers() -> Iterator[list[psutil.Process]]:
    """Three Python processes asleep in ``nap``, each far enough along for py-spy to read."""
    source = "import time\ndef nap():\n    time.sleep(60)\nprint(flush=True)\nnap()\n"
    started = [
        subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE) for _ in range(3)
    ]
    try:
        for process in started:
            assert process.stdout is not None
            process.stdout.readline()
        yield [psutil.Process(p.pid) for p in started]
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_py_spy_reads_the_first_most_python_processes_and_says_why_not_the_others(
    sleepers: list[psutil.Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    py_spy = find_unwinder()
    if py_spy is None:
        pytest.skip("py-spy is not installed (pip install 'pytest-expiry[native]')")
    monkeypatch.setattr(unwinder, "MOST", 2)
    dumps = unwind(sleepers, py_spy)
    first, second, third = (dumps.get(p.pid, "") for p in sleepers)
    if "nap" not in first:
        pytest.skip("py-spy cannot trace a process here")
    assert first.startswith("Current thread") and "in nap" in second
    assert third == "(not read: the stacks of the first 2 Python processes only, to end all sooner)"
