"""Threads a test leaves running are LEAKED, like processes (issue #13 part 3).

After each test's teardown, a non-daemon thread that appeared during the test and is still
busy (or a job the test left on an older pool) is reported: the ``expiry`` summary, the
report's section with the thread's stack, JSON and a JUnit property. It cannot be ended, so
``warn`` and ``kill`` report it and ``fail`` errors the test. When the interpreter's exit then
hangs, the exit report names the test that left each thread. Linux only (leak detection is).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.helpers import Run, RunPytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

THREADS = """
    import concurrent.futures
    import threading

    RELEASE = threading.Event()
    POOL = concurrent.futures.ThreadPoolExecutor(1)


    def hang_here():
        RELEASE.wait(2)  # long enough to be seen; short enough for the exit to wait


    def test_leaves_a_thread():
        threading.Thread(target=hang_here).start()


    def test_leaves_a_daemon_thread():
        threading.Thread(target=hang_here, daemon=True).start()


    def test_a_thread_that_ends():
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join()


    def test_uses_the_pool_and_waits():
        assert POOL.submit(lambda: 1).result() == 1


    def test_leaves_a_job_on_the_pool():
        POOL.submit(hang_here)
"""


def leaked_threads(path: Path) -> dict[str, list[str]]:
    events = json.loads(path.read_text())["events"]
    return {
        e["nodeid"].rpartition("::")[2]: [t["name"] for t in e["threads"]]
        for e in events
        if e["event"] == "leaked_thread"
    }


@pytest.fixture
def warned(pytester: pytest.Pytester, run_pytest: RunPytest) -> Run:
    pytester.makepyfile(test_threads=THREADS)
    return run_pytest("--expiry-leaks=warn", "--expiry-report=report.json", "-p", "no:randomly")


def test_a_busy_thread_or_job_left_by_a_test_is_reported_and_nothing_else(
    warned: Run, pytester: pytest.Pytester
) -> None:
    warned.result.assert_outcomes(passed=5)
    assert leaked_threads(pytester.path / "report.json") == {
        "test_leaves_a_thread": ["Thread-1 (hang_here)"],
        "test_leaves_a_job_on_the_pool": ["ThreadPoolExecutor-0_0"],
    }
    warned.result.stdout.fnmatch_lines(
        [
            "LEAKED thread 'Thread-1 (hang_here)' started by test_threads.py::test_leaves_a_thread",
            "LEAKED thread 'ThreadPoolExecutor-0_0' started by "
            "test_threads.py::test_leaves_a_job_on_the_pool",
        ]
    )


def test_without_the_plugin_the_same_suite_has_the_same_outcomes(
    warned: Run, run_pytest: RunPytest
) -> None:
    """Reporting a thread changes nothing a test observes: the differential run."""
    bare = run_pytest("-p", "no:expiry", "-p", "no:randomly")
    assert bare.result.parseoutcomes() == warned.result.parseoutcomes()
    assert bare.result.ret == warned.result.ret == 0


def test_the_report_of_a_leaked_thread_has_its_stack_and_a_junit_property(
    warned: Run, pytester: pytest.Pytester
) -> None:
    case = warned.testcase("test_leaves_a_thread")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties.get("expiry_leaked_threads") == "'Thread-1 (hang_here)'"
    events = json.loads((pytester.path / "report.json").read_text())
    assert events["leaked_threads"] == 2
    [record] = [e for e in events["events"] if e["nodeid"].endswith("::test_leaves_a_thread")]
    stack = record["threads"][0]["stack"]
    assert "in hang_here" in stack and "RELEASE.wait(2)" in stack, stack


def test_the_section_of_a_passing_test_shows_the_threads_stack(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_threads=THREADS)
    run = run_pytest("--expiry-leaks=warn", "-rP", "-p", "no:randomly", "-k", "leaves_a_thread")
    run.result.stdout.fnmatch_lines(
        [
            "*expiry: threads left running after teardown*",
            "thread 'Thread-1 (hang_here)' started by test_threads.py::test_leaves_a_thread "
            "is still running",
            "*in hang_here",
        ]
    )


def test_in_fail_mode_a_test_that_leaves_a_thread_errors(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_threads=THREADS)
    run = run_pytest("--expiry-leaks=fail", "-p", "no:randomly")
    run.result.assert_outcomes(passed=5, errors=2)
    assert "thread 'Thread-1 (hang_here)' started by test_threads.py::test_leaves_a_thread" in (
        run.output
    )


HUNG_EXIT = """
    import threading

    def test_leaves_a_thread_for_ever():
        threading.Thread(target=threading.Event().wait, name="never-ends").start()

    def test_passes():
        pass
"""


def test_a_hung_exit_names_the_test_that_left_the_thread(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_exit=HUNG_EXIT)
    run = run_pytest("--expiry-exit=1", "--expiry-leaks=warn", timeout=60)
    assert run.result.ret == 0, run.output
    assert "the interpreter has not exited" in run.output
    assert (
        "pytest-expiry: thread 'never-ends' was left running by "
        "test_exit.py::test_leaves_a_thread_for_ever"
    ) in run.output


def test_under_xdist_the_controller_names_the_thread_that_holds_a_workers_exit(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The worker's exit is bounded too (xdist alone waits 10 s, silently), and the
    controller says which thread held it, with its stack and the test that left it."""
    pytester.makepyfile(test_exit=HUNG_EXIT)
    run = run_pytest(
        "-n", "1", "--expiry-exit=1", "--expiry-leaks=warn", "--expiry-report=report.json"
    )
    run.result.assert_outcomes(passed=2)
    run.result.stdout.re_match_lines(
        [
            r"EXIT BLOCKED xdist worker gw0: thread 'never-ends' left running by "
            r"test_exit.py::test_leaves_a_thread_for_ever; the worker cannot exit until it ends",
            r"\s+File .*threading.py\", line \d+, in wait",
        ]
    )
    document = json.loads((pytester.path / "report.json").read_text())
    assert document["exit_blocked"] == 1
    (event,) = [e for e in document["events"] if e["event"] == "exit_blocked"]
    assert event["worker"] == "gw0"
    assert [t["test"] for t in event["threads"]] == ["test_exit.py::test_leaves_a_thread_for_ever"]
    assert run.seconds < 9  # bounded by --expiry-exit, not by xdist's 10 s


RELEASED_LATER = """
    import threading

    RELEASE = threading.Event()

    def test_leaves_a_thread():
        threading.Thread(target=RELEASE.wait, name="released-later").start()

    def test_releases_it():
        RELEASE.set()
        for thread in threading.enumerate():
            if thread.name == "released-later":
                thread.join()
"""


def test_under_xdist_a_left_thread_that_ended_before_the_session_did_blocks_no_exit(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_threads=RELEASED_LATER)
    run = run_pytest("-n", "1", "--expiry-leaks=warn", "--expiry-report=report.json")
    run.result.assert_outcomes(passed=2)
    assert "LEAKED thread 'released-later' started by test_threads.py::test_leaves_a_thread" in (
        run.output
    )
    assert "EXIT BLOCKED" not in run.output
    assert json.loads((pytester.path / "report.json").read_text())["exit_blocked"] == 0
