"""``lineage.tokens``: the session tokens in a process's environment, read from ``/proc``; an
environment that reads as empty is read again only while it may be hidden by an exec."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pytest_expiry import lineage

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")

_PF_KTHREAD = 0x00200000


def _a_kernel_thread() -> int | None:
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_bytes().rpartition(b")")[2].split()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and len(fields) > 6 and int(fields[6]) & _PF_KTHREAD:
            return int(entry.name)
    return None


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses ``tokens`` takes to read an environment again."""
    pauses: list[float] = []
    pausing = types.SimpleNamespace(sleep=pauses.append)  # lineage's own view of time only
    monkeypatch.setattr(lineage, "time", pausing)
    return pauses


def test_a_kernel_thread_has_no_tokens_and_is_read_once(no_retries: list[float]) -> None:
    """A busy machine starts kernel threads (``kworker``) in any test's window of pids: each
    used to cost 50 ms of retries, and a leak check after an expiry ran out of time."""
    pid = _a_kernel_thread()
    if pid is None:
        pytest.skip("no kernel thread is visible here (a pid namespace)")
    assert not lineage.tokens(pid)  # None: its environment cannot be read at all
    assert no_retries == []


def test_a_process_gets_the_tokens_it_was_started_with(no_retries: list[float]) -> None:
    env = {**os.environ, lineage.VARIABLE: "abc,def"}
    source = "import sys; print(flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", source], stdin=-1, stdout=-1, env=env)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # its exec is over: the environment can no longer be hidden
        assert lineage.tokens(child.pid) == ["abc", "def"]
        assert no_retries == []
    finally:
        child.communicate()


def test_a_process_gone_has_none(no_retries: list[float]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert lineage.tokens(child.pid) is None
