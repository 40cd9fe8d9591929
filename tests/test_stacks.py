"""A faulthandler dump as a report shows it: the hung thread first, pytest's machinery cut,
threads with nothing else left out."""

from __future__ import annotations

from pytest_expiry.stacks.collect import main_thread_first

DUMP = """Thread 0x00007f02 (most recent call first):
  File "/venv/lib/python3.11/site-packages/_pytest/runner.py", line 341 in from_call
  File "/venv/lib/python3.11/site-packages/pluggy/_callers.py", line 103 in _multicall

Thread 0x00007f03 (most recent call first):
  File "/src/helpers.py", line 12 in serve
  File "/usr/lib/python3.11/threading.py", line 982 in run

Thread 0x00007f04 (most recent call first):

Current thread 0x00007f01 (most recent call first):
  File "/src/test_x.py", line 5 in test_hangs
  File "/venv/lib/python3.11/site-packages/_pytest/python.py", line 159 in pytest_pyfunc_call
  File "/venv/lib/python3.11/site-packages/pluggy/_callers.py", line 103 in _multicall
"""


def test_the_hung_thread_comes_first_and_threads_of_machinery_alone_are_dropped() -> None:
    assert main_thread_first(DUMP).splitlines() == [
        "Current thread 0x00007f01 (most recent call first):",
        '  File "/src/test_x.py", line 5 in test_hangs',
        "  ... 2 frames of pytest's machinery",
        "",
        "Thread 0x00007f03 (most recent call first):",
        '  File "/src/helpers.py", line 12 in serve',
        '  File "/usr/lib/python3.11/threading.py", line 982 in run',
    ]


def test_the_current_thread_is_kept_even_when_only_machinery_is_left() -> None:
    dump = (
        "Current thread 0x1 (most recent call first):\n"
        '  File "/venv/site-packages/_pytest/main.py", line 1 in main\n'
    )
    assert main_thread_first(dump).splitlines() == [
        "Current thread 0x1 (most recent call first):",
        "  ... 1 frames of pytest's machinery",
    ]
