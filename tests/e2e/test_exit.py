"""The exit guard (``--expiry-exit``): an interpreter that cannot exit after the session.

Each hang runs in a real ``pytest`` subprocess (``run_pytest``, which also proves that no
process of the run is left afterwards). A bounded exit takes the session's own exit status
and prints what blocked it; a session that exits cleanly is untouched by the guard.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING

import pytest

from pytest_expiry import exit as exitguard

if TYPE_CHECKING:
    from tests.helpers import Run, RunPytest

# Each hang is a Python function of its own, so that its frame shows in the stacks printed.
HANGS = {
    "non-daemon-thread": """
        import threading, time

        def stuck_thread():
            time.sleep(3600)

        def test_leaves_the_hang():
            threading.Thread(target=stuck_thread, name="stuck").start()
    """,
    "thread-pool-job": """
        import concurrent.futures, time

        def stuck_job():
            time.sleep(3600)

        def test_leaves_the_hang():
            concurrent.futures.ThreadPoolExecutor(1).submit(stuck_job)
    """,
    "atexit-handler": """
        import atexit, time

        def stuck_at_exit():
            time.sleep(3600)

        def test_leaves_the_hang():
            atexit.register(stuck_at_exit)
    """,
}

# where the main thread waits, and the hung function, as faulthandler prints them
BLOCKED_IN = {
    "non-daemon-thread": ("in _shutdown", "in stuck_thread"),
    "thread-pool-job": ("in _python_exit", "in stuck_job"),
    "atexit-handler": ("in stuck_at_exit",),
}

FAILING = """

        def test_fails():
            assert False
"""


@pytest.mark.parametrize(
    ("outcome", "deadline"),
    [("failed", []), ("passed", ["--expiry=5"])],
    ids=["failed-exit-guard-alone", "passed-with-expiry"],
)
@pytest.mark.parametrize("hang", sorted(HANGS))
def test_a_hung_exit_is_ended_with_the_session_status_and_the_stacks(
    pytester: pytest.Pytester, run_pytest: RunPytest, hang: str, outcome: str, deadline: list[str]
) -> None:
    """Issue #11 case 5: the ``concurrent.futures`` job used to hang the exit for ever,
    the guard taking a main thread still running ``threading._shutdown`` for a program
    still running. ``--expiry-exit`` needs no deadline (``--expiry``) to work."""
    pytester.makepyfile(test_hang=HANGS[hang] + (FAILING if outcome == "failed" else ""))
    run = run_pytest("--expiry-exit=1", *deadline, timeout=60)
    expected = pytest.ExitCode.TESTS_FAILED if outcome == "failed" else pytest.ExitCode.OK
    assert run.result.ret == expected, run.output
    assert "the interpreter has not exited" in run.output
    for line in BLOCKED_IN[hang]:
        assert line in run.output
    assert f"exiting with the session's status {int(expected)}" in run.output
    assert run.seconds < 20


def test_an_atexit_handler_a_conftest_registered_at_import_is_bounded_too(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The guard lets go once the atexit handlers registered after the plugin was loaded
    have run (a daemon thread alive while the interpreter finalizes slows every exit): a
    conftest file is imported after that, so its handlers are still bounded."""
    pytester.makeconftest(
        "import atexit, time\n\n"
        "def stuck_at_exit():\n    time.sleep(3600)\n\n"
        "atexit.register(stuck_at_exit)\n"
    )
    pytester.makepyfile(test_passes="def test_passes():\n    pass\n")
    run = run_pytest("--expiry-exit=1", timeout=60)
    assert run.result.ret == pytest.ExitCode.OK, run.output
    assert "in stuck_at_exit" in run.output
    assert run.seconds < 20


def test_a_hung_exit_is_not_bounded_without_the_option(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The differential of the test above: without ``--expiry-exit`` (and no deadline,
    so no default) the same exit does hang; the run is ended by pytester's timeout."""
    pytester.makepyfile(test_hang=HANGS["thread-pool-job"])
    with pytest.raises(pytester.TimeoutExpired):
        run_pytest(timeout=4)


CLEAN = """
    import concurrent.futures, threading, time, pytest

    def test_passes():
        # threads and a pool that finish: the exit waits for them, briefly
        threading.Thread(target=time.sleep, args=(0.2,)).start()
        concurrent.futures.ThreadPoolExecutor(1).submit(time.sleep, 0.2)

    def test_fails():
        assert 1 == 2

    @pytest.mark.skip(reason="not today")
    def test_skipped():
        pass
"""

_DURATION = re.compile(r" in \d+(\.\d+)?s( \([^)]*\))?")


def tail(run: Run, lines: int = 4) -> list[str]:
    """The last ``lines`` lines of the run's standard output, run time taken out."""
    return [_DURATION.sub(" in Ns", line) for line in run.result.stdout.lines[-lines:]]


@pytest.mark.parametrize("suite", ["failing", "passing"])
def test_a_clean_exit_is_the_same_with_the_guard_as_without_the_plugin(
    pytester: pytest.Pytester, run_pytest: RunPytest, suite: str
) -> None:
    source = CLEAN if suite == "failing" else CLEAN.replace("1 == 2", "1 == 1")
    pytester.makepyfile(test_clean=source)
    guarded = run_pytest("--expiry-exit=1", "-rA", junit=False)
    plain = run_pytest("-p", "no:expiry", "-rA", junit=False)
    assert guarded.result.ret == plain.result.ret
    assert guarded.result.ret == (
        pytest.ExitCode.TESTS_FAILED if suite == "failing" else pytest.ExitCode.OK
    )
    assert tail(guarded) == tail(plain)
    assert "has not exited" not in guarded.output
    assert guarded.result.stderr.lines == plain.result.stderr.lines


IN_PROCESS = """
    import threading
    import pytest

    def test_runs_pytest_in_process(tmp_path):
        (tmp_path / "test_inner.py").write_text("def test_inner():\\n    assert False\\n")
        before = set(threading.enumerate())
        assert pytest.main([str(tmp_path), "-q", "-p", "no:cacheprovider",
                            "--expiry-exit=0.2"]) == pytest.ExitCode.TESTS_FAILED
        (guard,) = [t for t in set(threading.enumerate()) - before if t.name == "expiry-exit"]
        guard.join(30)  # the guard has decided (after 0.2 s) and this process is still here
        assert not guard.is_alive()
"""


def test_a_program_still_running_after_pytest_main_is_left_alone(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The inner session's guard finds the main thread still running the program (the
    outer session): it must not end the process with the inner session's status."""
    pytester.makepyfile(test_outer=IN_PROCESS)
    run = run_pytest("--expiry-exit=0", timeout=60)
    run.result.assert_outcomes(passed=1)
    assert run.result.ret == pytest.ExitCode.OK
    assert "has not exited" not in run.output


def test_the_running_program_is_not_shutting_down() -> None:
    assert not exitguard.shutting_down()


def test_a_main_thread_inside_threading_shutdown_is_shutting_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where ``threading._SHUTTING_DOWN`` does not exist, the main thread's stack tells:
    here ``threading._shutdown`` is stood in for by a function this test is inside."""
    monkeypatch.delattr(threading, "_SHUTTING_DOWN", raising=False)
    seen: list[bool] = []

    def stand_in() -> None:
        seen.append(exitguard.shutting_down())

    monkeypatch.setattr(threading, "_shutdown", stand_in)
    assert threading.current_thread() is threading.main_thread()
    stand_in()
    assert seen == [True]
    assert not exitguard.shutting_down()
