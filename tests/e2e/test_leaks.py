"""Processes a test leaves running after its teardown are LEAKED (``--expiry-leaks``).

The rule: alive after the teardown, created during the test, and a child of the test process
or an escapee that carries the session's tag (``PYTEST_EXPIRY_SESSION``) while its parent
does not. ``warn`` reports and touches nothing: a suite behaves exactly as it does without the
plugin (``DIFFERENTIAL`` runs with ``-p no:expiry`` and with the plugin and compares what its
tests observe). ``kill`` and ``fail`` end what leaked. Every test here ends what its inner
runs left, and ``run_pytest`` then proves that nothing remains.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

import psutil
import pytest

try:
    from tests.helpers import TAG, RunPytest, leaked, leaked_in_phases, tagged_processes
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import (  # type: ignore[no-redef,import-not-found]
        TAG,
        RunPytest,
        leaked,
        leaked_in_phases,
        tagged_processes,
    )

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

WARN = "--expiry-leaks=warn"  # the default; spelled out until the option's default says so
KILL = "--expiry-leaks=kill"


def end_leftovers() -> list[str]:
    """Kill what the inner runs left running; return their command lines."""
    left = []
    for process in tagged_processes(os.environ[TAG]):
        with contextlib.suppress(psutil.Error):
            left.append(" ".join(process.cmdline()))
            process.kill()
    return left


DAEMON = """
    import os, sys, time

    def daemon(seconds, report=None):
        '''Double fork and setsid without exec; the daemon writes the parent it ends up with.'''
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.setsid()
            middle = os.getpid()
            if os.fork() == 0:
                end = time.monotonic() + 5
                while os.getppid() == middle and time.monotonic() < end:
                    time.sleep(0.005)
                os.write(w, str(os.getppid()).encode())
                time.sleep(seconds)
            os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        parent = int(os.read(r, 64) or 0)
        os.close(r)
        return parent
"""

LEAKY = (
    DAEMON
    + """
    import subprocess
    import pytest

    @pytest.fixture(scope="module")
    def server():
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        yield process
        process.kill()
        process.wait()

    def test_starts_with_the_module_server(server):
        assert server.poll() is None

    def test_leaks_a_child():
        subprocess.Popen(["sleep", "61"])

    def test_leaks_an_escapee_by_setsid_and_double_fork():
        subprocess.run(["sh", "-c", "(setsid sleep 62 &); exit 0"], check=True)

    def test_leaks_a_python_daemon():
        assert daemon(63) != os.getpid()

    def test_cleans_up_after_itself():
        subprocess.run(["true"], check=True)

    def test_finds_the_module_server_still_running(server):
        assert server.poll() is None
"""
)
LEAKERS = (
    "test_leaks_a_child",
    "test_leaks_an_escapee_by_setsid_and_double_fork",
    "test_leaks_a_python_daemon",
)


def test_a_leak_is_charged_to_the_phase_that_started_it(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    phases = leaked_in_phases(pytester, run_pytest)
    assert phases == {"test_setup": ["setup"], "test_call": ["call"], "test_teardown": ["teardown"]}
    assert end_leftovers() == []


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_in_kill_mode_leaked_processes_are_reported_and_ended(
    pytester: pytest.Pytester, run_pytest: RunPytest, mode: list[str]
) -> None:
    pytester.makepyfile(LEAKY)
    report = pytester.path / "expiry.json"
    run = run_pytest("--expiry=10", KILL, f"--expiry-report={report}", *mode)
    run.result.assert_outcomes(passed=6)  # the fixture's process was never touched
    for name in LEAKERS:
        assert f".py::{name} left 1 processes running (ended)" in run.output
        properties = {p.get("name"): p.get("value") for p in run.testcase(name).iter("property")}
        assert "expiry_leaked" in properties
    records = leaked(report)
    assert sorted(r["nodeid"].split("::")[1] for r in records) == sorted(LEAKERS)
    assert all("SIGTERM" in names for r in records for names in r["signals"].values())
    assert all(p["phase"] == "call" for r in records for p in r["processes"])
    assert end_leftovers() == []  # the escapees too


def test_in_fail_mode_a_leaking_test_errors_in_teardown(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(LEAKY)
    run = run_pytest("--expiry=10", "--expiry-leaks=fail")
    run.result.assert_outcomes(passed=6, errors=3)
    for name in LEAKERS:
        assert run.testcase(name).find("error") is not None
    assert end_leftovers() == []


@pytest.mark.parametrize("deadline", [["--expiry=10"], []], ids=["deadline", "no-deadline"])
def test_in_warn_mode_leaks_are_reported_and_left_alone(
    pytester: pytest.Pytester, run_pytest: RunPytest, deadline: list[str]
) -> None:
    """Leak detection needs no deadline (#11 case 9); a double-forked escapee is found
    without being adopted, and nothing is signalled."""
    pytester.makepyfile(LEAKY)
    report = pytester.path / "expiry.json"
    run = run_pytest(*deadline, WARN, f"--expiry-report={report}")
    run.result.assert_outcomes(passed=6)
    assert run.output.count("left 1 processes running (left running)") == 3
    records = {r["nodeid"].split("::")[1]: r for r in leaked(report)}
    assert sorted(records) == sorted(LEAKERS) and not any(r["signals"] for r in records.values())
    daemon = records["test_leaks_a_python_daemon"]["processes"][0]
    pytest_pid = records["test_leaks_a_child"]["processes"][0]["ppid"]
    assert daemon["ppid"] != pytest_pid and daemon["phase"] == "call"  # not adopted
    left = end_leftovers()
    assert sorted(c for c in left if c.startswith("sleep")) == ["sleep 61", "sleep 62"]
    assert len(left) == 3  # and the daemon, a fork of pytest


@pytest.mark.parametrize("mode", ["kill", "warn"])
def test_a_leak_of_a_test_whose_teardown_failed_stays_a_section_of_its_own(
    pytester: pytest.Pytester, run_pytest: RunPytest, mode: str
) -> None:
    """The leak's text is a section of the teardown's report, beside its captured output,
    not part of the teardown's own failure: JUnit's <error> holds the teardown's traceback
    alone, and --show-capture=no leaves the section out, as it does for captured output."""
    pytester.makepyfile(
        """
        import subprocess, sys
        import pytest

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("the teardown broke")

        def test_leaks_and_its_teardown_fails(broken_teardown):
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        """
    )
    try:
        run = run_pytest("--expiry=10", f"--expiry-leaks={mode}", "--show-capture=no")
    finally:
        end_leftovers()
    run.result.assert_outcomes(passed=1, errors=1)
    case = run.testcase("test_leaks_and_its_teardown_fails")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert "expiry_leaked" in properties
    error = case.find("error")
    assert error is not None and "the teardown broke" in (error.text or "")
    assert "processes running" not in (error.text or "")
    failures = run.result.stdout.str().partition("= expiry =")[0]
    assert "expiry: leaked processes" not in failures
    assert "LEAKED" in run.output  # the summary still says so


def test_leak_detection_can_be_turned_off(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(LEAKY)
    run = run_pytest("--expiry=10", "--expiry-leaks=off")
    run.result.assert_outcomes(passed=6)
    assert "LEAKED" not in run.output
    assert len(end_leftovers()) == 3


def test_a_bad_leak_mode_is_a_usage_error(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile("def test_ok(): pass")
    run = run_pytest("--expiry=1", "--expiry-leaks=sometimes", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "sometimes" in run.output and "kill" in run.output


DIFFERENTIAL = (
    DAEMON
    + """
    import concurrent.futures, functools, json, subprocess
    import psutil, pytest

    AT_IMPORT = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "at-import"])
    KEPT = []

    def note(**values):
        with open("observed.jsonl", "a") as out:
            out.write(json.dumps(values) + "\\n")

    def test_a_double_forked_daemon_keeps_its_parent():
        parent = daemon(30)
        note(daemon_parent=parent, daemon_parent_is_pytest=parent == os.getpid())

    def test_an_orphan_that_exits_is_no_zombie_of_pytest():
        daemon(0)
        time.sleep(0.3)
        zombies = [p.pid for p in psutil.Process().children() if p.status() == "zombie"]
        note(zombies=zombies)

    @functools.cache
    def pool():
        return concurrent.futures.ProcessPoolExecutor(2)

    @pytest.mark.parametrize("n", range(4))
    def test_a_cached_pool_is_reused(n):
        note(**{f"pool{n}": pool().submit(pow, 2, n).result()})

    @functools.cache
    def stubborn():
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \\
               "print(flush=True); time.sleep(30)"
        helper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        helper.stdout.readline()
        return helper

    @pytest.mark.parametrize("n", range(5))
    def test_a_helper_that_ignores_sigterm_is_reused(n):
        note(**{f"helper{n}": stubborn().poll()})
        with open("span.jsonl", "a") as out:  # first to last: four teardowns and checks
            out.write(json.dumps({n: time.monotonic()}) + "\\n")

    def test_starts_a_child_and_keeps_it():
        KEPT.append(subprocess.Popen(["sleep", "30"]))

    def test_the_owner_sees_the_real_status():
        KEPT[0].terminate()
        note(status=KEPT[0].wait(5))

    def test_the_child_started_at_import_still_runs():
        note(import_child=AT_IMPORT.poll())
"""
)


def test_warn_mode_changes_nothing_a_suite_observes(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The same suite without the plugin and with it (a deadline, the default leak mode):
    the same outcomes, the same observations, and the tests sharing a helper that ignores
    SIGTERM take about the same time. Kill mode, the control,
    changes them, but still reaps nothing."""
    pytester.makepyfile(DIFFERENTIAL)
    observed = pytester.path / "observed.jsonl"
    report, kill_report = pytester.path / "expiry.json", pytester.path / "kill.json"
    span = pytester.path / "span.jsonl"
    runs, seen, spans = {}, {}, {}
    for name, args in {
        "bare": ["-p", "no:expiry"],
        "warn": ["--expiry=60", WARN, f"--expiry-report={report}"],
        "kill": ["--expiry=60", KILL, "--expiry-grace=1", f"--expiry-report={kill_report}"],
    }.items():
        for path in (observed, span):
            path.unlink(missing_ok=True)
        runs[name] = run_pytest(*args)
        lines = observed.read_text().splitlines() if observed.exists() else []
        seen[name] = {k: v for line in lines for k, v in json.loads(line).items()}
        stamps = {
            k: v for line in span.read_text().splitlines() for k, v in json.loads(line).items()
        }
        spans[name] = stamps["4"] - stamps["0"]
        end_leftovers()
    bare, warn, kill = runs["bare"], runs["warn"], runs["kill"]
    bare.result.assert_outcomes(passed=14)
    assert warn.result.parseoutcomes() == bare.result.parseoutcomes()
    assert warn.result.ret == bare.result.ret == 0
    assert seen["warn"] == seen["bare"]
    assert seen["bare"]["daemon_parent_is_pytest"] is False
    assert seen["bare"]["zombies"] == []
    assert [seen["bare"][f"pool{n}"] for n in range(4)] == [1, 2, 4, 8]
    assert seen["bare"]["status"] == -15 and seen["bare"]["import_child"] is None
    assert spans["warn"] <= 1.5 * spans["bare"] + 0.5  # a SIGTERM and the grace: 2 s
    records = {r["nodeid"].split("::")[1]: r for r in leaked(report)}
    assert "test_a_double_forked_daemon_keeps_its_parent" in records  # found, not adopted
    assert not any(c.endswith("at-import") for r in records.values() for c in _commands(r))
    helper = records[HELPER]["processes"][0]
    assert helper["phase"] == "call" and helper["ppid"] != 1
    # the control: kill mode ends the cached pool and costs the helper's grace
    assert "BrokenProcessPool" in kill.output and spans["kill"] >= 1.0
    ended = {r["nodeid"].split("::")[1]: r["signals"] for r in leaked(kill_report)}
    assert list(ended[HELPER].values()) == [["SIGTERM", "SIGKILL"]]
    assert seen["kill"]["status"] == -15  # ended by SIGTERM, and not reaped: its owner's to see


HELPER = "test_a_helper_that_ignores_sigterm_is_reused[0]"


def _commands(record: dict[str, Any]) -> list[str]:
    return [" ".join(p["cmdline"]) for p in record["processes"]]


CLOSERANGE = """
    import os, subprocess

    def test_closes_every_descriptor():
        os.closerange(3, 65536)
        subprocess.Popen(["sleep", "64"])

    def test_after_it():
        subprocess.Popen(["sleep", "65"])
"""


def test_a_test_that_closes_every_descriptor_does_not_break_leak_detection(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """pytest's own logging and faulthandler plugins cannot survive ``closerange`` (they
    close their descriptors at exit), so they are off here, in every run alike."""
    pytester.makepyfile(CLOSERANGE)
    common = ["-s", "-p", "no:logging", "-p", "no:faulthandler"]
    bare = run_pytest(*common, "-p", "no:expiry", junit=False)
    bare.result.assert_outcomes(passed=2)
    end_leftovers()
    for mode in (WARN, KILL):
        run = run_pytest(*common, mode, junit=False)
        run.result.assert_outcomes(passed=2)
        assert run.result.ret == bare.result.ret == 0
        assert "Traceback" not in run.output and "pytest_expiry" not in run.output
        assert "test_closes_every_descriptor left 1 processes" in run.output
        assert "test_after_it left 1 processes" in run.output
        assert len(end_leftovers()) == (2 if mode == WARN else 0)


TAKEN_OVER = """
    import os, subprocess

    PIDFILE = os.path.abspath("daemon.pid")

    def test_puts_a_pidfile_on_every_number():
        os.closerange(3, 65536)
        with open(PIDFILE, "w") as written:
            written.write("12345\\n")
        fd = os.open(PIDFILE, os.O_RDONLY)
        os.lseek(fd, 2, os.SEEK_SET)
        for number in range(fd + 1, 100):  # the plugin's descriptor was one of these
            os.dup2(fd, number)
        subprocess.Popen(["sleep", "66"])

    def test_after_it():
        assert all(os.lseek(number, 0, os.SEEK_CUR) == 2 for number in range(3, 100))
        with open(PIDFILE) as again:
            assert again.read() == "12345\\n"
"""


def test_a_file_in_place_of_the_leak_descriptor_is_left_alone_and_misleads_nothing(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """A test puts a file whose text is a pid on the number of the descriptor the pid marks are
    read through. The file's offset is untouched (marks are read with ``pread``), the leak is
    still found, and its phase, which could come from the file's text, is ``unknown``."""
    pytester.makepyfile(TAKEN_OVER)
    common = ["-s", "-p", "no:logging", "-p", "no:faulthandler"]
    bare = run_pytest(*common, "-p", "no:expiry", junit=False)
    bare.result.assert_outcomes(passed=2)
    end_leftovers()
    run = run_pytest(*common, KILL, "--expiry-report=taken.json", junit=False)
    run.result.assert_outcomes(passed=2)
    assert "test_puts_a_pidfile_on_every_number left 1 processes" in run.output
    (record,) = leaked(pytester.path / "taken.json")
    assert [p["phase"] for p in record["processes"]] == ["unknown"]
    assert end_leftovers() == []


NESTED = """
    import os

    def test_runs_a_session_inside(pytester):
        before = os.environ["PYTEST_EXPIRY_SESSION"]
        pytester.makepyfile(test_inner=f'''
            import os
            def test_sees_one_more_token():
                tokens = os.environ["PYTEST_EXPIRY_SESSION"].split(",")
                assert ",".join(tokens[:-1]) == "{before}" and tokens[-1]
        ''')
        result = pytester.runpytest_inprocess("--expiry-leaks=warn", "-n", "1")
        result.assert_outcomes(passed=1)
        assert os.environ["PYTEST_EXPIRY_SESSION"] == before
"""


def test_a_nested_session_leaves_the_environment_as_it_was(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The inner session adds its token and takes exactly that back; its xdist worker, still
    shutting down when the outer test ends, is no leak."""
    pytester.makepyfile(NESTED)
    run = run_pytest("-p", "pytester", WARN)
    run.result.assert_outcomes(passed=1)
    assert "LEAKED" not in run.output
