"""Hangs outside a test's own phases: importing a test module, and the session budget.

The interpreter's exit (``--expiry-exit``) is in ``test_exit``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.helpers import RunPytest

HANGS_AT_IMPORT = """
    import time
    time.sleep(3600)

    def test_never_collected():
        pass
"""


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_module_that_hangs_at_import_becomes_a_collection_error_with_its_stack(
    pytester: pytest.Pytester, run_pytest: RunPytest, mode: list[str]
) -> None:
    pytester.makepyfile(test_a_hangs=HANGS_AT_IMPORT, test_b_fine="def test_fine(): pass")
    run = run_pytest("--expiry=5", "--expiry-collect=0.5", *mode)
    outcomes = run.result.parseoutcomes()
    assert outcomes["passed"] == 1
    assert outcomes["errors"] == (2 if mode else 1)  # each xdist worker collects every module
    assert "ERROR test_a_hangs.py - pytest_expiry.Expired" in run.output
    assert "expired in collect" in run.output
    assert 'test_a_hangs.py", line 2 in <module>' in run.output  # the hung line, from its stack
    assert run.seconds < 30


def test_without_xdist_the_other_modules_run_even_without_continue_on_collection_errors(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_a_hangs=HANGS_AT_IMPORT, test_b_fine="def test_fine(): pass")
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(passed=1, errors=1)
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    assert "expired in collect" in run.output


def test_an_ordinary_import_error_still_stops_the_run_as_pytest_does(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        test_a_hangs=HANGS_AT_IMPORT,
        test_b_broken="import no_such_module_anywhere",
        test_c_fine="def test_fine(): pass",
    )
    run = run_pytest("--expiry=0.5")
    assert run.result.ret == pytest.ExitCode.INTERRUPTED
    assert "2 errors during collection" in run.output


STEPS = """
    import time
    import pytest

    @pytest.mark.parametrize("step", range(20))
    def test_step(step):
        time.sleep(0.4)
"""


@pytest.mark.parametrize(
    ("mode", "budget"), [([], "1.5"), (["-n", "2"], "2")], ids=["plain", "xdist"]
)
def test_a_session_budget_expires_the_running_test_and_reports_the_rest_as_not_run(
    pytester: pytest.Pytester, run_pytest: RunPytest, mode: list[str], budget: str
) -> None:
    pytester.makepyfile(STEPS)
    report = pytester.path / "expiry.json"
    run = run_pytest(f"--expiry-session={budget}", f"--expiry-report={report}", *mode)
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) + outcomes["skipped"] == 20
    # the test running when the budget ran out expires (under xdist: at most one per worker;
    # none if the workers took the whole budget to start)
    assert (0 if mode else 1) <= outcomes.get("failed", 0) <= (2 if mode else 1)
    assert "SESSION BUDGET exceeded" in run.output
    document = json.loads(report.read_text())
    assert document["not_run"] == outcomes["skipped"]
    assert run.junit is not None
    skipped = [s for case in run.junit.iter("testcase") if (s := case.find("skipped")) is not None]
    assert len(skipped) == outcomes["skipped"]
    assert all("not run" in s.get("message", "") for s in skipped)
