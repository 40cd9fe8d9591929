"""Hostile code must not make anything worse (issue #11).

The rule: with the plugin on, no test ends worse than without it, pytest's own bookkeeping
stays intact, no process outside an expired scope (or a leak) is signalled, and every hang
is still ended and named. Each case is a real pytest session with a short deadline; unless
the case says otherwise, the hung test fails as expired, the tests after it run and pass,
the session exits with 1 (not INTERNALERROR's 3, not a signal), and nothing is left running.

The last part crosses hang kinds (sleep, busy loop, lock, wait on a child) with hostile
conditions (every descriptor closed, a forked and exec'd child around, an in-process pytest
run just before).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

try:
    from tests.helpers import XDIST, Finished, InnerSessions
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import XDIST, Finished, InnerSessions  # type: ignore[no-redef,import-not-found]

DEADLINE = ("--expiry=0.5", "--expiry-grace=0.5")
ONE_SECOND = ("--expiry=1", "--expiry-grace=0.5")
# pytest's own plugins that hold a descriptor across the session; without them (and with
# capture at the sys level) plain pytest survives a test that closes every descriptor
NO_FD_PLUGINS = ("-p", "no:logging", "-p", "no:faulthandler", "--capture=sys")
STACKS_SIGNAL = int(signal.SIGRTMAX) - 2
INTERRUPT_SIGNAL = int(signal.SIGRTMAX) - 3
needs_xdist = pytest.mark.skipif(not XDIST, reason="pytest-xdist is not installed")


@pytest.fixture
def inner(tmp_path: Path) -> Iterator[InnerSessions]:
    """Inner sessions in ``tmp_path``; afterwards, whatever they left running is ended and
    the test fails naming it."""
    sessions = InnerSessions(tmp_path)
    yield sessions
    sessions.close()


def assert_carried_on(run: Finished, hung: list[str], after: list[str], module: str = "") -> None:
    """The session ended by itself with exit code 1, each ``hung`` test failed (or errored)
    as expired, and each ``after`` test passed."""
    run.require_ended()
    assert "INTERNALERROR" not in run.output, run.describe()
    assert run.returncode == 1, run.describe()
    for name in hung:
        assert run.outcome(name, module) in ("failed", "error"), f"{name}: {run.describe()}"
        assert "expired" in run.report(name, module).lower(), run.report(name, module)
    for name in after:
        assert run.outcome(name, module) == "passed", f"{name}: {run.report(name, module)}"


def seconds_until_gone(process: psutil.Process, limit: float) -> float:
    """How long ``process`` takes to exit (a zombie has exited), from now; inf past ``limit``."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    else:
        return float("inf")
    return time.monotonic() - start


def wait_for_file(path: Path, limit: float) -> str:
    end = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > end:
            pytest.fail(f"{path.name} did not appear within {limit} s")
        time.sleep(0.01)
    return path.read_text()


# --- 1. every descriptor closed ----------------------------------------------------------------

CLOSES_EVERY_DESCRIPTOR = """
    import os
    import time

    def test_closes_every_descriptor_then_hangs():
        os.closerange(3, 65536)
        time.sleep(3600)

    def test_after_closing_every_descriptor():
        pass

    def test_closes_every_descriptor_and_passes():
        os.closerange(3, 65536)

    def test_after_closing_every_descriptor_again():
        pass
"""


def test_a_test_that_closes_every_descriptor_still_expires(inner: InnerSessions) -> None:
    """``os.closerange(3, 65536)`` closes the plugin's descriptors too: the hang is still
    ended as an expiry, the later tests run, pytest's bookkeeping survives."""
    inner.write("test_closes.py", CLOSES_EVERY_DESCRIPTOR)
    run = inner.run(*DEADLINE, *NO_FD_PLUGINS)
    assert_carried_on(
        run,
        hung=["test_closes_every_descriptor_then_hangs"],
        after=[
            "test_after_closing_every_descriptor",
            "test_closes_every_descriptor_and_passes",
            "test_after_closing_every_descriptor_again",
        ],
    )


# --- 2. children forked from Python that exec'd another program ---------------------------------

EXEC_CHILDREN = """
    import json
    import os
    import subprocess
    import time

    import pytest

    def forked_then_exec_sleep(seconds):
        pid = os.fork()
        if pid == 0:
            try:
                os.execv("/bin/sleep", ["sleep", str(seconds)])
            finally:
                os._exit(127)
        return pid

    def exit_status(child, within=5.0):
        if isinstance(child, subprocess.Popen):
            try:
                return child.wait(within)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
                return "still running"
        end = time.monotonic() + within
        while time.monotonic() < end:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.01)
        os.kill(child, 9)
        os.waitpid(child, 0)
        return "still running"

    @pytest.fixture
    def children(request):
        started = {}
        yield started
        statuses = {name: exit_status(child) for name, child in started.items()}
        with open(f"statuses-{request.node.name}.json", "w") as out:
            json.dump(statuses, out)

    def test_hangs_with_exec_children(children):
        children["forked, exec'd"] = forked_then_exec_sleep(3600)
        children["Popen, preexec_fn"] = subprocess.Popen(["sleep", "3600"], preexec_fn=lambda: None)
        time.sleep(3600)

    def test_after_the_hang():
        pass

    def test_passes_with_exec_children(children):
        children["forked, exec'd"] = forked_then_exec_sleep(0.3)
        children["Popen, preexec_fn"] = subprocess.Popen(["sleep", "0.3"], preexec_fn=lambda: None)
"""


def test_an_execd_child_is_ended_by_the_tree_kill_not_by_the_stacks_signal(
    inner: InnerSessions,
) -> None:
    """A child that forked from Python (so it ran our at-fork hook) and then exec'd
    /bin/sleep no longer catches the stacks signal: it must die of the tree kill's SIGTERM
    or SIGKILL, never of SIGRTMAX-2; and the same children in a test that does not hang
    change nothing."""
    inner.write("test_exec_children.py", EXEC_CHILDREN)
    run = inner.run(*ONE_SECOND)
    assert_carried_on(
        run,
        hung=["test_hangs_with_exec_children"],
        after=["test_after_the_hang", "test_passes_with_exec_children"],
    )
    hung = json.loads((inner.cwd / "statuses-test_hangs_with_exec_children.json").read_text())
    for name, status in hung.items():
        assert status in (-signal.SIGTERM, -signal.SIGKILL), (
            f"{name} ended with {status} (the stacks signal is -{STACKS_SIGNAL})"
        )
    passed = json.loads((inner.cwd / "statuses-test_passes_with_exec_children.json").read_text())
    assert passed == {"forked, exec'd": 0, "Popen, preexec_fn": 0}


# --- 3. the test process execs another program ------------------------------------------------

EXECS_ITSELF = """
    import os

    def test_execs_itself():
        os.execv("/bin/sleep", ["sleep", "3600"])

    def test_after_exec():
        pass
"""


def test_a_test_process_that_execs_another_program_is_killed_and_named(
    inner: InnerSessions,
) -> None:
    """The session cannot carry on (the process is /bin/sleep now), but the run ends within
    a few seconds of the deadline, by the designed hard kill, with the watchdog's report
    naming the test."""
    inner.write("test_execs.py", EXECS_ITSELF)
    run = inner.run(*ONE_SECOND)
    run.require_ended()
    assert run.seconds < 10, run.describe()
    assert "session killed" in run.output, run.describe()
    assert "test_execs.py::test_execs_itself" in run.output, run.describe()
    assert run.returncode == -signal.SIGKILL, run.describe()


# --- 4. the test resets the plugin's signals ---------------------------------------------------

RESETS_SIGNALS = """
    import signal
    import time

    def test_resets_the_interrupt_signal():
        signal.signal(signal.SIGRTMAX - 3, signal.SIG_DFL)
        time.sleep(3600)

    def test_after_resetting_the_interrupt_signal():
        pass

    def test_resets_both_signals():
        signal.signal(signal.SIGRTMAX - 3, signal.SIG_DFL)
        signal.signal(signal.SIGRTMAX - 2, signal.SIG_DFL)
        time.sleep(3600)

    def test_after_resetting_both_signals():
        pass
"""


@pytest.mark.parametrize("reset", ["the_interrupt_signal", "both_signals"])
def test_a_test_that_resets_our_signals_does_not_die_silently(
    inner: InnerSessions, reset: str
) -> None:
    """Plain pytest: either the hang is interrupted and the session carries on, or (it
    cannot be interrupted) the designed hard kill ends it with the report; the session never
    dies of one of the plugin's own signals, and the output names the expiry."""
    inner.write("test_signals.py", RESETS_SIGNALS)
    hung = f"test_resets_{reset}"
    run = inner.run(
        *DEADLINE, f"test_signals.py::{hung}", f"test_signals.py::test_after_resetting_{reset}"
    )
    run.require_ended()
    assert run.returncode in (1, -signal.SIGKILL), (
        f"{run.describe()}\n(the plugin's signals are -{STACKS_SIGNAL} and -{INTERRUPT_SIGNAL})"
    )
    assert "expired" in run.output, run.describe()
    assert f"test_signals.py::{hung}" in run.output, run.describe()
    if run.returncode == 1:
        assert_carried_on(run, hung=[hung], after=[f"test_after_resetting_{reset}"])


@needs_xdist
def test_a_test_that_resets_our_signals_is_an_expiry_under_isolation(
    inner: InnerSessions,
) -> None:
    """Under ``--expiry-isolate`` such a test is an expiry failure and the session carries on."""
    inner.write("test_signals.py", RESETS_SIGNALS)
    run = inner.run(*DEADLINE, "--expiry-isolate", timeout=40)
    assert_carried_on(
        run,
        hung=["test_resets_the_interrupt_signal", "test_resets_both_signals"],
        after=["test_after_resetting_the_interrupt_signal", "test_after_resetting_both_signals"],
    )


# --- 5. a class-scoped fixture that hangs in setup ---------------------------------------------

CLASS_FIXTURE = """
    import time

    import pytest

    @pytest.fixture(scope="class")
    def shared_resource():
        BREAKS
        yield

    class TestSharesAResource:
        def test_first(self, shared_resource):
            pass

        def test_second(self, shared_resource):
            pass

    def test_after_the_class():
        pass
"""


def test_a_class_fixture_that_hangs_in_setup_fails_like_pytest_fail(inner: InnerSessions) -> None:
    """Both tests of the class error, as they do when the fixture calls ``pytest.fail``;
    pytest's setup state stays sound (no ``assert not self._finalizers``)."""
    inner.write("test_a_hangs.py", CLASS_FIXTURE.replace("BREAKS", "time.sleep(3600)"))
    inner.write("test_b_fails.py", CLASS_FIXTURE.replace("BREAKS", 'pytest.fail("broken")'))
    run = inner.run(*DEADLINE)
    run.require_ended()
    assert "assert not self._finalizers" not in run.output, run.describe()
    assert_carried_on(
        run,
        hung=["test_first", "test_second"],
        after=["test_after_the_class"],
        module="test_a_hangs",
    )
    names = ["test_first", "test_second", "test_after_the_class"]
    hanging = [run.outcome(name, "test_a_hangs") for name in names]
    failing = [run.outcome(name, "test_b_fails") for name in names]
    assert hanging == failing == ["error", "error", "passed"]


# --- 6. a teardown hang among other finalizers -------------------------------------------------

TEARDOWN_AMONG_FINALIZERS = """
    import os
    import time

    import pytest

    @pytest.fixture
    def finalizer_that_must_run():
        yield
        open("finalizer-ran", "w").close()

    @pytest.fixture
    def hangs_in_teardown():
        yield
        time.sleep(3600)

    def test_sets_a_variable_then_hangs_in_teardown(
        finalizer_that_must_run, monkeypatch, hangs_in_teardown
    ):
        monkeypatch.setenv("X", "1")

    def test_next_sees_every_finalizer_done():
        assert "X" not in os.environ
        assert os.path.exists("finalizer-ran")
"""


def test_a_teardown_hang_does_not_stop_the_other_finalizers(inner: InnerSessions) -> None:
    """The fixture that hangs in teardown expires; monkeypatch's undo and the other fixture's
    teardown still run, so the next test sees no ``X``."""
    inner.write("test_finalizers.py", TEARDOWN_AMONG_FINALIZERS)
    run = inner.run(*DEADLINE)
    assert_carried_on(
        run,
        hung=["test_sets_a_variable_then_hangs_in_teardown"],
        after=["test_next_sees_every_finalizer_done"],
    )


# --- 7. time spent between the phases ----------------------------------------------------------

SLOW_BETWEEN_PHASES_CONFTEST = """
    import time

    def pytest_runtest_logreport(report):
        if "test_after" not in report.nodeid:
            time.sleep(0.3)
"""
SLOW_BETWEEN_PHASES = """
    import time

    import pytest

    @pytest.fixture
    def half_a_second_each_side():
        time.sleep(0.5)
        yield
        time.sleep(0.5)

    def test_setup_call_teardown_and_reports_overrun(half_a_second_each_side):
        time.sleep(0.4)

    @pytest.fixture
    def slow_setup():
        time.sleep(0.8)
        yield
        time.sleep(0.1)

    def test_the_deadline_passes_while_the_setup_is_reported(slow_setup):
        time.sleep(0.1)

    def test_after_the_slow_phases():
        pass
"""


def test_time_spent_between_the_phases_counts(inner: InnerSessions) -> None:
    """A report hook that takes 0.3 s after each phase is part of the test's time: with
    0.5 + 0.4 + 0.5 s of phases (or a deadline that passes during the hook) and a 1 s deadline
    the test expires; it does not pass with a SLOW notice."""
    inner.write("conftest.py", SLOW_BETWEEN_PHASES_CONFTEST)
    inner.write("test_phases.py", SLOW_BETWEEN_PHASES)
    run = inner.run(*ONE_SECOND)
    assert_carried_on(
        run,
        hung=[
            "test_setup_call_teardown_and_reports_overrun",
            "test_the_deadline_passes_while_the_setup_is_reported",
        ],
        after=["test_after_the_slow_phases"],
    )


# --- 8. an in-process pytester run -------------------------------------------------------------

IN_PROCESS_PYTESTER = """
    import time

    import pytest

    @pytest.mark.expires(20)
    def test_runs_pytest_in_process(pytester):
        pytester.makepyfile(test_nested="def test_nested():\\n    pass\\n")
        quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
        for extra in ((), ("--expiry=5",)):
            pytester.runpytest(*quiet, *extra).assert_outcomes(passed=1)

    def test_hangs_after_the_nested_runs():
        time.sleep(3600)

    def test_after_the_hang():
        pass
"""


def test_a_hang_after_an_in_process_pytester_run_is_still_interrupted(
    inner: InnerSessions,
) -> None:
    """The nested sessions (one with a deadline of its own) leave the outer session's
    interrupt working: the later hang is an ``Expired`` failure with its stacks, not a
    killed session."""
    inner.write("test_pytester.py", IN_PROCESS_PYTESTER)
    run = inner.run(*DEADLINE, "-p", "pytester")
    assert "session killed" not in run.output, run.describe()
    assert_carried_on(
        run,
        hung=["test_hangs_after_the_nested_runs"],
        after=["test_runs_pytest_in_process", "test_after_the_hang"],
    )
    report = run.report("test_hangs_after_the_nested_runs")
    assert "pytest_expiry.Expired" in report and "--- stacks of pid" in report, report


# --- 9. Expired wrapped in another exception ---------------------------------------------------

WRAPS_EXPIRED = """
    import time

    def test_wraps_whatever_interrupts_it():
        try:
            time.sleep(3600)
        except BaseException as error:
            raise RuntimeError("wrapped") from error

    def test_after_the_wrapped_hang():
        pass
"""


def test_an_expiry_wrapped_in_another_exception_is_still_the_expiry(inner: InnerSessions) -> None:
    """``raise RuntimeError(...) from expired`` is reported as the expiry, not as a test that
    swallowed the Expired exception."""
    inner.write("test_wraps.py", WRAPS_EXPIRED)
    run = inner.run(*DEADLINE)
    assert_carried_on(
        run, hung=["test_wraps_whatever_interrupts_it"], after=["test_after_the_wrapped_hang"]
    )
    assert "swallowed" not in run.report("test_wraps_whatever_interrupts_it")


# --- 10. SIGTERM to pytest ---------------------------------------------------------------------

WAITS_ON_A_CHILD = """
    import os
    import subprocess
    import sys

    def test_waits_on_a_child():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        with open("child.pid.tmp", "w") as out:
            out.write(str(child.pid))
        os.rename("child.pid.tmp", "child.pid")
        child.wait()
"""


def test_when_pytest_is_sigtermed_the_child_of_its_test_is_ended(inner: InnerSessions) -> None:
    """pytest dies of SIGTERM at once (no Python code of its own runs); the child its test
    started is ended within a few seconds all the same, as after Ctrl-C."""
    inner.write("test_sigterm.py", WAITS_ON_A_CHILD)
    session = inner.start("--expiry=30")
    child = psutil.Process(int(wait_for_file(inner.cwd / "child.pid", 15)))
    os.kill(session.process.pid, signal.SIGTERM)
    run = session.wait()
    assert run.returncode == -signal.SIGTERM, run.describe()
    assert seconds_until_gone(child, 5) < 3.0, "the test's child outlived pytest"


# --- 11. the watchdog killed or stopped by a test ----------------------------------------------

SIGNALS_THE_WATCHDOG = """
    import os
    import signal
    import time

    import psutil

    def session_watchdogs():
        tag = os.environ["EXPIRY_TEST_TAG"]
        found = []
        for process in psutil.process_iter():
            try:
                if (
                    any("pytest_expiry.watchdog.main" in part for part in process.cmdline())
                    and process.environ().get("EXPIRY_TEST_TAG") == tag
                    and process.status() != psutil.STATUS_ZOMBIE
                ):
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def test_signals_the_watchdog():
        [watchdog] = session_watchdogs()
        name = os.environ["WATCHDOG_SIGNAL"]
        watchdog.send_signal(getattr(signal, name))
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                status = watchdog.status()
            except psutil.NoSuchProcess:
                break
            if status == (psutil.STATUS_STOPPED if name == "SIGSTOP" else psutil.STATUS_ZOMBIE):
                break
            time.sleep(0.01)

    @__import__("pytest").mark.expires(5)
    def test_passes_after_the_signal():
        # a stopped watchdog is known by a heartbeat that has not moved for a second (and
        # does not move when woken): a test that starts sooner is not yet protected
        time.sleep(1.5)

    def test_hangs_after_the_signal():
        time.sleep(3600)

    def test_passes_after_the_first_hang():
        pass

    def test_hangs_again():
        time.sleep(3600)

    def test_passes_at_the_end():
        pass
"""


@pytest.mark.parametrize("sent", ["SIGKILL", "SIGSTOP"])
def test_a_watchdog_killed_or_stopped_by_a_test_is_replaced(
    inner: InnerSessions, sent: str
) -> None:
    """pytest warns once, and the later hangs are still interrupted (by a new watchdog); the
    stopped one does not outlive the session."""
    inner.write("test_watchdog.py", SIGNALS_THE_WATCHDOG)
    run = inner.run(*DEADLINE, timeout=25, WATCHDOG_SIGNAL=sent)
    assert_carried_on(
        run,
        hung=["test_hangs_after_the_signal", "test_hangs_again"],
        after=[
            "test_signals_the_watchdog",
            "test_passes_after_the_signal",
            "test_passes_after_the_first_hang",
            "test_passes_at_the_end",
        ],
    )
    assert run.output.count("pytest-expiry: WARNING") == 1, run.describe()


# --- 12. a node id over 64 KiB -----------------------------------------------------------------

LONG_NODE_ID = """
    import time

    import pytest

    LONG = "x" * 70_000

    @pytest.mark.parametrize("value", [LONG], ids=["hangs-" + LONG])
    def test_long_id_hangs(value):
        time.sleep(3600)

    @pytest.mark.parametrize("value", [LONG], ids=["passes-" + LONG])
    def test_long_id_passes(value):
        pass

    def test_after_the_long_ids():
        pass
"""


def test_a_node_id_over_64_kib_expires_normally(inner: InnerSessions) -> None:
    """A 70 000-character parametrize id: the hang expires as usual, and a passing test with
    such an id costs no extra time."""
    inner.write("test_long.py", LONG_NODE_ID)
    run = inner.run(*DEADLINE)
    assert_carried_on(
        run, hung=["test_long_id_hangs"], after=["test_long_id_passes", "test_after_the_long_ids"]
    )
    assert run.seconds_of("test_long_id_passes") < 0.5, run.seconds_of("test_long_id_passes")


# --- 13. an xdist worker that crashes on its own -----------------------------------------------

CRASH_CONFTEST = """
    import os
    import time

    def pytest_runtest_logreport(report):
        if "test_crashes" in report.nodeid and not os.environ.get("PYTEST_XDIST_WORKER"):
            with open("crash-reported", "w") as out:
                out.write(repr(time.monotonic()))
"""
CRASHES = """
    import os
    import time

    def test_crashes():
        with open("crashed", "w") as out:
            out.write(repr(time.monotonic()))
        os._exit(3)

    def test_after_the_crash():
        pass
"""


@needs_xdist
def test_a_worker_that_crashes_by_itself_is_reported_as_crashed_without_delay(
    inner: InnerSessions,
) -> None:
    """``os._exit(3)`` in an xdist worker: xdist's crash report, as soon as without the plugin
    (within a second more), and the session carries on."""
    inner.write("conftest.py", CRASH_CONFTEST)
    inner.write("test_crash.py", CRASHES)
    latency = {}
    for name, plugin in (("without", ("-p", "no:expiry")), ("with", ONE_SECOND)):
        run = inner.run("-n", "1", *plugin, timeout=40)
        run.require_ended()
        assert run.returncode == 1, run.describe()
        assert run.outcome("test_crashes") in ("failed", "error"), run.describe()
        assert "crashed" in run.report("test_crashes"), run.report("test_crashes")
        assert run.outcome("test_after_the_crash") == "passed", run.describe()
        crashed = float((inner.cwd / "crashed").read_text())
        latency[name] = float((inner.cwd / "crash-reported").read_text()) - crashed
        (inner.cwd / "crashed").unlink()
        (inner.cwd / "crash-reported").unlink()
    assert latency["with"] < latency["without"] + 1.0, latency


# --- every hang kind under hostile conditions --------------------------------------------------

HANGS = {
    "sleep": "time.sleep(3600)",
    "busy_loop": "while True:\n        pass",
    "lock": "lock = threading.Lock()\n    lock.acquire()\n    lock.acquire()",
    "wait_on_child": (
        'subprocess.run([sys.executable, "-c", "import time; time.sleep(3600)"], check=True)'
    ),
}


@dataclass(frozen=True)
class Condition:
    """Hostile code run in each hung test before it hangs (``inline``), or as a test of its
    own, with a generous deadline, just before each hung test (``before``)."""

    inline: str = "pass"
    before: str = ""
    args: tuple[str, ...] = ()


CONDITIONS = {
    "closed_descriptors": Condition(inline="os.closerange(3, 65536)", args=NO_FD_PLUGINS),
    "forked_exec_child": Condition(
        inline="if os.fork() == 0:\n"
        "        try:\n"
        '            os.execv("/bin/sleep", ["sleep", "3600"])\n'
        "        finally:\n"
        "            os._exit(127)"
    ),
    "in_process_run_before": Condition(
        before='pytester.makepyfile(test_nested="def test_nested():\\n    pass\\n")\n'
        '    quiet = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")\n'
        '    for extra in ((), ("--expiry=5",)):\n'
        "        pytester.runpytest(*quiet, *extra).assert_outcomes(passed=1)",
        args=("-p", "pytester"),
    ),
}
COMBINATIONS = [
    ("closed_descriptors", "sleep"),
    ("closed_descriptors", "busy_loop"),
    ("closed_descriptors", "wait_on_child"),
    ("forked_exec_child", "sleep"),
    ("forked_exec_child", "lock"),
    ("forked_exec_child", "wait_on_child"),
    ("in_process_run_before", "busy_loop"),
    ("in_process_run_before", "lock"),
]


def hostile_module(condition: str) -> str:
    hostile = CONDITIONS[condition]
    parts = ["import os\nimport subprocess\nimport sys\nimport threading\nimport time\n\n"]
    parts.append("import pytest\n")
    for kind in [kind for cond, kind in COMBINATIONS if cond == condition]:
        if hostile.before:
            parts.append(
                f"\n\n@pytest.mark.expires(20)\ndef test_before_{kind}(pytester):\n"
                f"    {hostile.before}\n"
            )
        parts.append(
            f"\n\ndef test_{kind}():\n    {hostile.inline}\n    {HANGS[kind]}\n"
            f"\n\ndef test_after_{kind}():\n    pass\n"
        )
    return "".join(parts)


@dataclass
class HostileRun:
    run: Finished
    left_running: list[str]


_HOSTILE_RUNS: dict[str, HostileRun] = {}


def hostile_run(condition: str, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    """One session per condition, with each hang kind it is crossed with (run once)."""
    if condition not in _HOSTILE_RUNS:
        sessions = InnerSessions(tmp_path_factory.mktemp(f"hostile-{condition}"))
        sessions.write(f"test_{condition}.py", hostile_module(condition))
        try:
            run = sessions.run(*DEADLINE, *CONDITIONS[condition].args, timeout=20)
        finally:
            left = sessions.leftovers()
        _HOSTILE_RUNS[condition] = HostileRun(run, left)
    return _HOSTILE_RUNS[condition]


@pytest.mark.parametrize(
    ("condition", "kind"), COMBINATIONS, ids=[f"{c}-{k}" for c, k in COMBINATIONS]
)
def test_every_hang_kind_expires_under_hostile_conditions(
    tmp_path_factory: pytest.TempPathFactory, condition: str, kind: str
) -> None:
    hostile = hostile_run(condition, tmp_path_factory)
    run = hostile.run
    run.require_ended()
    assert "INTERNALERROR" not in run.output, run.describe()
    assert run.outcome(f"test_{kind}") == "failed", run.describe()
    assert "expired" in run.report(f"test_{kind}"), run.report(f"test_{kind}")
    assert run.outcome(f"test_after_{kind}") == "passed", run.report(f"test_after_{kind}")
    assert hostile.left_running == []
