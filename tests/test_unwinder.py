"""py-spy's dumps read like faulthandler's, named threads or not."""

from __future__ import annotations

from pytest_expiry.stacks.unwinder import _as_faulthandler

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
