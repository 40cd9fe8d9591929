"""pytest-expiry with what suites already use, end to end (README: Works with).

pytest's own doctests, unittest test cases, ``-x`` and ``--lf`` run here; pytest-repeat and
pytest-randomly are the real plugins, installed by the compatibility job of ``.ci/run``
(``pip install '.[test,compat]'``); where they are not installed those tests are skipped.
"""

from __future__ import annotations

import importlib.util

import pytest

NO_EXTRAS = ("-p", "no:hypothesispytest")


def needs(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"{module} is not installed (the compatibility job of .ci/run installs it)",
    )


@pytest.fixture
def run_pytest(run_pytest, monkeypatch):
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(NO_EXTRAS))
    return run_pytest


def expiry_message(run, name):
    failure = run.testcase(name).find("failure")
    assert failure is not None, run.output
    return failure.get("message", "")


# --- doctests ---------------------------------------------------------------------------

HUNG_DOCTEST = '''
def hangs():
    """
    >>> import time
    >>> x = 1
    >>> time.sleep(30)
    >>> x
    1
    """


def passes():
    """
    >>> 1 + 1
    2
    """
'''


@pytest.mark.parametrize("extra", [[], ["--doctest-continue-on-failure"]], ids=["", "continue"])
def test_a_hung_doctest_fails_at_the_example_that_hung(pytester, run_pytest, extra):
    pytester.makepyfile(mod=HUNG_DOCTEST)
    run = run_pytest("--doctest-modules", "--expiry=0.5", *extra)
    run.result.assert_outcomes(failed=1, passed=1)
    assert "swallowed" not in run.output
    run.result.stdout.fnmatch_lines(
        [
            "*[[]doctest[]] mod.hangs*",
            "005     >>> time.sleep(30)",
            "UNEXPECTED EXCEPTION: still running in call after * s (deadline 0.5 s)",
            '  File "<doctest mod.hangs[[]2[]]>", line 1, in <module>',
            "pytest_expiry.Expired: still running in call after *",
            "*mod.py:5: UnexpectedException",
        ]
    )
    assert "mod.py::mod.hangs expired in call after " in run.output
    assert "still running in call after" in expiry_message(run, "mod.hangs")


def test_a_hung_doctest_in_a_text_file_fails_at_its_line(pytester, run_pytest):
    pytester.maketxtfile(test_guide=">>> import time\n>>> time.sleep(30)\n")
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(failed=1)
    run.result.stdout.fnmatch_lines(
        ["002 >>> time.sleep(30)", "*test_guide.txt:2: UnexpectedException"]
    )


# --- unittest, -x, --lf -----------------------------------------------------------------


def test_a_hung_unittest_test_case_expires_and_its_teardown_runs(pytester, run_pytest):
    pytester.makepyfile(
        """
        import pathlib
        import time
        import unittest

        class TestCase(unittest.TestCase):
            def tearDown(self):
                pathlib.Path("torn-down").write_text("yes")

            def test_hangs(self):
                time.sleep(30)

            def test_passes(self):
                pass
        """
    )
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(failed=1, passed=1)
    assert "Expired: still running in call after" in expiry_message(run, "test_hangs")
    assert (pytester.path / "torn-down").read_text() == "yes"


TWO_HANGS = """
import time

def test_first_hang():
    time.sleep(30)

def test_second_hang():
    time.sleep(30)

def test_passes():
    pass
"""


def test_exitfirst_stops_after_the_first_expiry(pytester, run_pytest):
    pytester.makepyfile(TWO_HANGS)
    run = run_pytest("--expiry=0.5", "-x")
    run.result.assert_outcomes(failed=1)
    assert "stopping after 1 failures" in run.output
    assert "test_second_hang" not in run.output.split("short test summary")[0].split("FAILURES")[0]


def test_last_failed_reruns_the_tests_that_expired(pytester, run_pytest):
    """``run_pytest`` turns the cache off, so this runs ``pytester`` itself (``run_pytest``
    still tags the processes and proves that none is left)."""
    pytester.makepyfile(TWO_HANGS)
    first = pytester.runpytest_subprocess("--expiry=0.5", timeout=60)
    first.assert_outcomes(failed=2, passed=1)
    again = pytester.runpytest_subprocess("--expiry=0.5", "--lf", timeout=60)
    again.assert_outcomes(failed=2)  # test_passes is not run again
    assert "run-last-failure: rerun previous 2 failures" in again.stdout.str()


# --- pytest-repeat, pytest-randomly --------------------------------------------------------


@needs("pytest_repeat")
def test_each_repetition_of_pytest_repeat_has_its_own_deadline(pytester, run_pytest):
    """Three repetitions of 0.4 s under a 0.7 s deadline: together they exceed it, each
    alone does not; the second repetition hangs and expires alone."""
    pytester.makepyfile(
        """
        import time

        def test_repeated(request):
            time.sleep(0.4)
            if request.node.callspec.params["__pytest_repeat_step_number"] == 1:
                time.sleep(30)
        """
    )
    run = run_pytest("--expiry=0.7", "--count=3")
    run.result.assert_outcomes(passed=2, failed=1)
    assert "test_repeated[2-3] expired in call after " in run.output


@needs("pytest_randomly")
def test_under_pytest_randomly_a_hang_still_expires_and_the_others_pass(pytester, run_pytest):
    pytester.makepyfile(TWO_HANGS)
    for seed in ("1", "2"):
        run = run_pytest("--expiry=0.5", "-p", "randomly", f"--randomly-seed={seed}")
        run.result.assert_outcomes(failed=2, passed=1)
        assert "Using --randomly-seed=" in run.output
