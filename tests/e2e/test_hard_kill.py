"""Tests that cannot be interrupted: C code holding the GIL, or code swallowing ``Expired``.

The watchdog gathers their stacks (faulthandler answers even with the GIL held), waits the
grace period for the test process to stop, then SIGKILLs it with everything it started.
Under pytest-xdist the worker is replaced and the test is reported as an expiry failure;
without xdist the session ends, and the watchdog tells the user what happened.
"""

from __future__ import annotations

import json
import signal
import textwrap
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.helpers import RunPytest

UNINTERRUPTIBLE = """
    import multiprocessing
    import time

    def test_first():
        pass

    def test_holds_the_gil():
        sum(range(10**15))

    def test_swallows_expired():
        while True:
            try:
                time.sleep(10)
            except BaseException:
                pass

    def _sleep():
        time.sleep(3600)

    def test_forks_then_holds_the_gil():
        child = multiprocessing.get_context("fork").Process(target=_sleep)
        child.start()
        sum(range(10**15))

    def test_last():
        pass
"""
HUNG = ("test_holds_the_gil", "test_swallows_expired", "test_forks_then_holds_the_gil")
DEADLINE, GRACE = 0.5, 0.5


@pytest.mark.parametrize(
    "mode",
    [
        ["-n", "2"],
        ["-n", "2", "--dist", "loadfile"],
        ["-n", "2", "--dist", "loadscope"],
        ["--expiry-isolate"],
    ],
    ids=["load", "loadfile", "loadscope", "isolate"],
)
def test_under_xdist_a_killed_test_fails_as_expired_once_and_the_session_goes_on(
    pytester: pytest.Pytester, run_pytest: RunPytest, mode: list[str]
) -> None:
    pytester.makepyfile(UNINTERRUPTIBLE)
    report = pytester.path / "expiry.json"
    run = run_pytest(
        f"--expiry={DEADLINE}", f"--expiry-grace={GRACE}", f"--expiry-report={report}", *mode
    )
    run.result.assert_outcomes(failed=3, passed=2)  # a killed test is never run again
    assert "maximum crashed workers reached" not in run.output
    assert "own watchdog" not in run.output, "local workers share the controller's watchdog"
    for name in HUNG:
        case = run.testcase(name)
        failure = case.find("failure")
        assert failure is not None, f"{name} is not a <failure>"
        assert "Expired: still running" in failure.get("message", "")
        assert f"in {name}" in (failure.text or ""), "the hung frame is in the failure text"
        assert DEADLINE <= float(case.get("time", "nan")) < DEADLINE + GRACE + 1.0
    events = json.loads(report.read_text())["events"]
    assert sorted(e["nodeid"].split("::")[1] for e in events) == sorted(HUNG)
    assert {e["event"] for e in events} == {"hard_killed"}
    assert all(e["stacks"] for e in events)


def test_without_xdist_the_session_ends_and_the_watchdog_says_where_it_hung(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(UNINTERRUPTIBLE)
    report = pytester.path / "expiry.json"
    run = run_pytest(
        f"--expiry={DEADLINE}", f"--expiry-grace={GRACE}", f"--expiry-report={report}",
        "-k", "first or gil",
    )  # fmt: skip
    assert run.result.ret == -signal.SIGKILL
    assert "pytest-expiry: session killed" in run.output
    assert "in test_holds_the_gil" in run.output
    assert "--expiry-isolate" in run.output
    document = json.loads(report.read_text())
    assert document["exit_status"] == 137
    [event] = document["events"]
    assert event["event"] == "hard_killed"
    assert event["nodeid"].endswith("::test_holds_the_gil")
    assert "SIGKILL" in next(iter(event["signals"].values()))


def test_expiry_isolate_without_xdist_is_a_usage_error(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("def test_ok(): pass")
    run = run_pytest("--expiry=1", "--expiry-isolate", "-p", "no:xdist", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pytest-xdist is not installed" in run.output


def kills_the_watchdog(session_pid: str) -> str:
    """Inner test source: a test that kills the watchdog of the session whose pid
    ``session_pid`` (an expression) is."""
    return textwrap.indent(
        textwrap.dedent(
            f"""
            @pytest.mark.expires(30)  # listing every process can take a while when busy
            def test_kills_the_watchdog():
                session = f'"session_pid": {{{session_pid}}},'
                for process in psutil.process_iter(["cmdline"]):
                    command = " ".join(process.info["cmdline"] or [])
                    if "pytest_expiry.watchdog.main" in command and session in command:
                        process.kill()
                        process.wait()
            """
        ),
        " " * 8,
    )


def test_a_dead_watchdog_is_reported_once_and_replaced_so_later_hangs_still_expire(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import os
        import time

        import psutil
        import pytest

{kills_the_watchdog}
        def test_a():
            pass

        def test_hangs_later():
            time.sleep(30)
        """.format(kills_the_watchdog=kills_the_watchdog("os.getpid()"))
    )
    run = run_pytest("--expiry=1", "--expiry-grace=0.5")
    run.result.assert_outcomes(passed=2, failed=1)
    assert run.output.count("the expiry watchdog went away") == 1
    assert "a new watchdog guards the tests from here on" in run.output
    failure = run.testcase("test_hangs_later").find("failure")
    assert failure is not None and "Expired: still running" in failure.get("message", "")
    assert "INTERNALERROR" not in run.output


def test_a_worker_whose_controllers_watchdog_died_has_its_hard_kills_reported(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The worker's own watchdog (started when it finds the controller's gone) keeps the
    account of a hard kill for the controller, which reads it on this host."""
    pytester.makepyfile(
        """
        import os

        import psutil
        import pytest

{kills_the_watchdog}
        def test_a():
            pass

        def test_holds_the_gil():
            sum(range(10**15))

        def test_last():
            pass
        """.format(kills_the_watchdog=kills_the_watchdog("os.getppid()"))
    )
    run = run_pytest(f"--expiry={DEADLINE}", f"--expiry-grace={GRACE}", "-n", "1")
    run.result.assert_outcomes(passed=3, failed=1)
    failure = run.testcase("test_holds_the_gil").find("failure")
    assert failure is not None, "a hard kill is a <failure>, not xdist's crash <error>"
    assert "Expired: still running" in failure.get("message", "")
    assert "crashed while running" not in run.output


def test_a_failure_slow_to_format_is_not_mistaken_for_an_uninterruptible_test(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The test process answers the watchdog as soon as Expired reaches pytest, before the
    failure is formatted: a report that takes longer than the grace period to build (slow
    reprs with ``-l``, deep tracebacks on a loaded machine) never gets the process killed."""
    pytester.makepyfile(
        """
        import time

        class SlowRepr:
            def __repr__(self):
                time.sleep(1)
                return "SlowRepr()"

        def test_hangs():
            thing = SlowRepr()
            time.sleep(60)

        def test_after():
            pass
        """
    )
    run = run_pytest(f"--expiry={DEADLINE}", f"--expiry-grace={GRACE}", "-l")
    run.result.assert_outcomes(failed=1, passed=1)
    assert "session killed" not in run.output
