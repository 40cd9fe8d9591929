"""Shared fixtures: run pytest for real, and prove afterwards that nothing was left running.

Every inner pytest run gets a unique ``EXPIRY_TEST_TAG`` in its environment; every process it
starts inherits it (unless a test clears the environment), so leftovers are found even after
they were orphaned and reparented to init, which ``children(recursive=True)`` cannot see.
"""

from __future__ import annotations

import os
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest

TAG = "EXPIRY_TEST_TAG"


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose environment carries ``TAG=tag``."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid == os.getpid() or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(TAG) == tag:
                found.append(process)
        except psutil.Error:
            continue
    return found


def assert_none_left(tag: str, within: float = 3.0) -> None:
    """Fail if processes tagged ``tag`` are still alive after ``within`` seconds (and kill
    them, so that one failure does not poison the rest of the run)."""
    end = time.monotonic() + within
    left = tagged_processes(tag)
    while left and time.monotonic() < end:
        time.sleep(0.05)
        left = tagged_processes(tag)
    if left:
        described = [f"{p.pid}: {' '.join(p.cmdline())}" for p in left]
        for process in left:
            process.kill()
        pytest.fail("processes left running:\n" + "\n".join(described))


@dataclass
class Run:
    """An inner pytest run: its result, wall time and (when asked for) JUnit tree."""

    result: pytest.RunResult
    seconds: float
    junit: ET.Element | None

    @property
    def output(self) -> str:
        return self.result.stdout.str() + "\n" + self.result.stderr.str()

    def testcase(self, name: str) -> ET.Element:
        assert self.junit is not None
        for case in self.junit.iter("testcase"):
            if case.get("name") == name:
                return case
        raise AssertionError(f"no testcase {name} in the JUnit report")


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """``run_pytest(*args, junit=True)`` runs pytest in a subprocess in the pytester
    directory and checks, after the test, that none of its processes are left."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    for variable in (
        "PYTEST_EXPIRY",
        "PYTEST_TIMEOUT",
        "PYTEST_ADDOPTS",
        "PYTEST_XDIST_AUTO_NUM_WORKERS",
    ):
        monkeypatch.delenv(variable, raising=False)

    def run(*args: str, junit: bool = True, timeout: float = 120) -> Run:
        extra = ["-p", "no:cacheprovider"]
        junit_path = pytester.path / f"junit-{uuid.uuid4().hex}.xml"
        if junit:
            extra.append(f"--junitxml={junit_path}")
        start = time.monotonic()
        result = pytester.runpytest_subprocess(*extra, *args, timeout=timeout)
        seconds = time.monotonic() - start
        tree = ET.parse(junit_path).getroot() if junit and junit_path.exists() else None
        return Run(result, seconds, tree)

    yield run
    assert_none_left(tag)
