"""A failure's expiry section shows each distinct stack once: processes hung alike (thread
ids aside) are one line each, naming the process whose stacks were shown."""

from __future__ import annotations

from typing import Any

from pytest_expiry.record import expired
from pytest_expiry.report.terminal import describe_expiry

TEST = 'Current thread 0x7f01 (most recent call first):\n  File "t.py", line 8 in test_t'
POOL = 'Current thread {pid} (idle, most recent call first):\n  File "w.py", line 6 in <module>'


def _process(pid: int, role: str, stack: str | None, native: str | None = None) -> dict[str, Any]:
    return {
        "pid": pid,
        "ppid": 1,
        "role": role,
        "cmdline": ["python3", f"{role}.py"],
        "signals": [],
        "stack": stack,
        "native": native,
    }


def _section(*processes: dict[str, Any]) -> list[str]:
    account = {"processes": list(processes), "survivors": []}
    return describe_expiry(expired("t.py::test_t", "call", 1.0, 1.02, account)).splitlines()


def test_processes_hung_alike_are_shown_once() -> None:
    lines = _section(
        _process(10, "test process", TEST),
        _process(11, "worker", POOL.format(pid=11)),
        _process(12, "worker", POOL.format(pid=12)),
        _process(13, "worker", POOL.format(pid=13)),
    )
    assert lines.count('  File "w.py", line 6 in <module>') == 1
    assert "Current thread 11 (idle, most recent call first):" in lines
    assert lines[-2:] == [
        "--- stacks of pid 12 (worker): the same as pid 11's ---",
        "--- stacks of pid 13 (worker): the same as pid 11's ---",
    ]


def test_different_stacks_and_missing_ones_are_each_shown() -> None:
    lines = _section(
        _process(10, "test process", TEST),
        _process(11, "worker", POOL.format(pid=11)),
        _process(12, "worker", POOL.format(pid=12).replace("line 6", "line 7")),
        _process(13, "sleep", None),
        _process(14, "sleep", None),
    )
    assert '  File "w.py", line 6 in <module>' in lines
    assert '  File "w.py", line 7 in <module>' in lines
    missing = "(no Python stack: not a Python process, or it did not answer)"
    assert lines.count(missing) == 2
    assert not [line for line in lines if "the same as" in line]


def test_a_process_with_native_frames_shows_its_stacks_in_full() -> None:
    native = "Thread 12 (active):\n    spin (libspin.so)"
    lines = _section(
        _process(10, "test process", TEST),
        _process(11, "worker", POOL.format(pid=11)),
        _process(12, "worker", POOL.format(pid=12), native),
    )
    assert lines.count('  File "w.py", line 6 in <module>') == 2
    assert "    spin (libspin.so)" in lines
