"""An expiry ends what the expired test started, not what a session's or a module's fixture
started before it for the tests after it too (a database server, a pool): those tests run as
they would have. The report still lists such a process, with its stacks, as left running."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import pytest

try:
    from tests.helpers import XDIST, RunPytest
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import XDIST, RunPytest  # type: ignore[no-redef,import-not-found]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

INNER = """
import subprocess
import sys

import pytest

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture(scope="session")
def server():
    process = subprocess.Popen(SLEEPER)
    yield process
    process.terminate()
    process.wait()


@pytest.fixture
def helper():
    process = subprocess.Popen(SLEEPER)  # in the expired test's own setup
    yield process
    process.kill()
    process.wait()


def test_first(server):
    assert server.poll() is None


def test_hangs(server, helper):
    child = subprocess.Popen(SLEEPER)
    child.wait()


def test_after(server, helper):
    assert server.poll() is None, f"the session's server ended with {server.returncode}"
"""


@pytest.mark.parametrize(
    "mode", ["plain", pytest.param("xdist", marks=pytest.mark.skipif(not XDIST, reason="no xdist"))]
)
def test_an_expiry_leaves_the_processes_of_earlier_fixtures_running(
    mode: str, pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_inner=INNER)
    workers = ["-n", "1"] if mode == "xdist" else []
    run = run_pytest("--expiry=1", "--expiry-grace=0.5", "--expiry-report=r.json", *workers)
    assert run.testcase("test_hangs").find("failure") is not None, run.output
    assert run.testcase("test_first").find("failure") is None, run.output
    assert run.testcase("test_after").find("failure") is None, run.output
    [record] = json.loads((pytester.path / "r.json").read_text())["events"]
    labels = {p["pid"]: p["label"] for p in record["processes"]}
    spared = [pid for pid, label in labels.items() if "left running" in label]
    assert len(spared) == 1, labels
    assert str(spared[0]) not in record["signals"] and str(spared[0]) in record["stacks"]
    ended = [pid for pid in record["pids"] if str(pid) in record["signals"]]
    assert len(ended) == 2, record["signals"]  # the helper and the child, both the test's


def _outcome(case: ET.Element) -> str:
    problems = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
    return "+".join(problems) or "passed"


def test_the_tests_around_an_expiry_end_as_they_do_without_the_plugin_and_the_hang(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """Differential: every test but the hung one ends as in a run of the same suite with
    ``-p no:expiry`` that leaves the hung test out (without the plugin it would never end)."""
    pytester.makepyfile(test_inner=INNER)
    guarded = run_pytest("--expiry=1", "--expiry-grace=0.5")
    bare = run_pytest("-p", "no:expiry", "--deselect", "test_inner.py::test_hangs")
    assert guarded.junit is not None and bare.junit is not None
    without = {c.get("name"): _outcome(c) for c in bare.junit.iter("testcase")}
    with_plugin = {c.get("name"): _outcome(c) for c in guarded.junit.iter("testcase")}
    assert with_plugin.pop("test_hangs") == "failure"
    assert with_plugin == without == {"test_first": "passed", "test_after": "passed"}
