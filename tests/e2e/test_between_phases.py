"""A deadline that passes while pytest is between a test's phases (making or logging a
report, in its own hooks or a plugin's), end to end.

Nothing can be raised there without breaking pytest, so the expiry waits for the next phase:

* before the call: the call fails with ``Expired`` before the test's body runs;
* before the teardown: the teardown still runs (fixtures must be finalized), then fails with
  ``Expired``;
* the tests after it run and pass, in plain pytest and under pytest-xdist.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

try:
    from tests.helpers import XDIST
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import XDIST  # type: ignore[no-redef,import-not-found]

if TYPE_CHECKING:
    from tests.helpers import RunPytest

CONFTEST = """
import time

def pytest_runtest_logreport(report):
    # pytest is between two phases here; the deadline (0.5 s) passes during the sleep
    if report.when == "setup" and report.nodeid.endswith("test_slow_before_call"):
        time.sleep(1.0)
    if report.when == "call" and report.nodeid.endswith("test_slow_before_teardown"):
        time.sleep(1.0)
"""

INNER = """
import pathlib
import pytest

MARKS = pathlib.Path(__file__).parent / "marks"

@pytest.fixture
def finalized():
    yield
    (MARKS / "finalized").touch()

def test_slow_before_call():
    (MARKS / "body ran").touch()

def test_slow_before_teardown(finalized):
    pass

def test_after():
    pass
"""

MODES = [pytest.param([], id="plain")]
if XDIST:
    MODES.append(pytest.param(["-n", "2"], id="xdist"))


@pytest.mark.parametrize("mode", MODES)
def test_an_expiry_between_phases_is_raised_when_the_next_phase_begins(
    run_pytest: RunPytest, pytester: pytest.Pytester, mode: list[str]
) -> None:
    marks = Path(pytester.path, "marks")
    marks.mkdir()
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_phases=INNER)
    run = run_pytest("--expiry=0.5", "--expiry-grace=0.5", "-rA", *mode)
    output = run.output
    run.result.assert_outcomes(passed=2, failed=1, errors=1)
    assert "FAILED test_phases.py::test_slow_before_call" in output
    assert "its deadline passed before call began" in output
    assert not (marks / "body ran").exists()
    assert "ERROR at teardown of test_slow_before_teardown" in output
    assert "its deadline passed before teardown began" in output
    assert (marks / "finalized").exists()
    assert "PASSED test_phases.py::test_after" in output
