"""pytest-expiry with what suites already use, end to end (README: Works with).

pytest's own doctests, unittest test cases, ``-x`` and ``--lf`` run here; pytest-repeat and
pytest-randomly are the real plugins, installed by the compatibility job of ``.ci/run``
(``pip install '.[test,compat]'``); where they are not installed those tests are skipped.
"""

from __future__ import annotations

import pytest

try:
    from tests.helpers import Run, RunPytest, needs
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import Run, RunPytest, needs  # type: ignore[no-redef,import-not-found]


def expiry_message(run: Run, name: str) -> str:
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
def test_a_hung_doctest_fails_at_the_example_that_hung(
    pytester: pytest.Pytester, run_pytest: RunPytest, extra: list[str]
) -> None:
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


def test_a_hung_doctest_in_a_text_file_fails_at_its_line(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.maketxtfile(test_guide=">>> import time\n>>> time.sleep(30)\n")
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(failed=1)
    run.result.stdout.fnmatch_lines(
        ["002 >>> time.sleep(30)", "*test_guide.txt:2: UnexpectedException"]
    )


# --- unittest, -x, --lf -----------------------------------------------------------------


def test_a_hung_unittest_test_case_expires_and_its_teardown_runs(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
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


def test_exitfirst_stops_after_the_first_expiry(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(TWO_HANGS)
    run = run_pytest("--expiry=0.5", "-x")
    run.result.assert_outcomes(failed=1)
    assert "stopping after 1 failures" in run.output
    assert "test_second_hang" not in run.output.split("short test summary")[0].split("FAILURES")[0]


def test_last_failed_reruns_the_tests_that_expired(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
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
def test_each_repetition_of_pytest_repeat_has_its_own_deadline(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
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
def test_under_pytest_randomly_a_hang_still_expires_and_the_others_pass(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(TWO_HANGS)
    for seed in ("1", "2"):
        run = run_pytest("--expiry=0.5", "-p", "randomly", f"--randomly-seed={seed}")
        run.result.assert_outcomes(failed=2, passed=1)
        assert "Using --randomly-seed=" in run.output


# --- async tests: pytest-asyncio, anyio (asyncio and trio), trio.run ----------------------

ASYNCIO_TESTS = """
import asyncio
import pathlib

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def resource(request):
    yield
    await asyncio.sleep(0)  # the loop still runs for the teardown
    pathlib.Path(f"torn-down-{request.node.name}").write_text("yes")


@pytest.mark.asyncio
async def test_awaits_forever(resource):
    await asyncio.Event().wait()


@pytest.mark.asyncio
async def test_one_task_of_a_gather_hangs(resource):
    async def quick():
        await asyncio.sleep(0)

    await asyncio.gather(quick(), asyncio.Event().wait())


@pytest.mark.asyncio
async def test_next(resource):
    await asyncio.sleep(0)
"""

ANYIO_TESTS = """
import pathlib

import anyio
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture
async def resource(request):
    yield
    await anyio.sleep(0)
    pathlib.Path(f"torn-down-{request.node.name}").write_text("yes")


async def test_sleeps_forever(resource):
    await anyio.sleep_forever()


async def test_next(resource):
    await anyio.sleep(0)
"""

TRIO_RUN_TESTS = """
import trio


def test_runs_trio_forever():
    trio.run(trio.sleep_forever)


def test_next():
    trio.run(trio.sleep, 0)
"""


def assert_not_killed(run: Run) -> None:
    assert run.result.ret == 1, run.output
    assert "HARD-KILLED" not in run.output and "Task was destroyed" not in run.output


@needs("pytest_asyncio")
def test_a_hung_asyncio_test_expires_and_its_async_fixture_is_torn_down(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(ASYNCIO_TESTS)
    run = run_pytest("--expiry=0.5", "-o", "asyncio_default_fixture_loop_scope=function")
    run.result.assert_outcomes(failed=2, passed=1)
    assert_not_killed(run)
    for name in ("test_awaits_forever", "test_one_task_of_a_gather_hangs"):
        assert "Expired: still running in call after" in expiry_message(run, name)
    for name in ("test_awaits_forever", "test_one_task_of_a_gather_hangs", "test_next"):
        assert (pytester.path / f"torn-down-{name}").read_text() == "yes"


@needs("anyio")
@needs("trio")
def test_a_hung_anyio_test_expires_on_both_backends_and_the_session_carries_on(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """On trio the expiry is raised in the test's task (the main thread waits in anyio's
    host loop): the run stays usable for the fixture's teardown and for the next test."""
    pytester.makepyfile(ANYIO_TESTS)
    run = run_pytest("--expiry=0.5", "-p", "anyio")
    run.result.assert_outcomes(failed=2, passed=2)
    assert_not_killed(run)
    for backend in ("asyncio", "trio"):
        name = f"test_sleeps_forever[{backend}]"
        assert "Expired: still running in call after" in expiry_message(run, name)
        assert (pytester.path / f"torn-down-{name}").read_text() == "yes"
        assert (pytester.path / f"torn-down-test_next[{backend}]").read_text() == "yes"
    trio_failure = run.testcase("test_sleeps_forever[trio]").find("failure")
    assert trio_failure is not None and "await anyio.sleep_forever()" in (trio_failure.text or "")


@needs("trio")
def test_a_hung_trio_run_in_a_sync_test_expires_and_the_next_test_passes(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(TRIO_RUN_TESTS)
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(failed=1, passed=1)
    assert_not_killed(run)
    assert "Expired: still running in call after" in expiry_message(run, "test_runs_trio_forever")
    assert "TrioInternalError" not in run.output
