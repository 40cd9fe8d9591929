"""What a user is shown of an expiry, end to end: the terminal summary, JUnit, the JSON report
(``--expiry-report``), the ``pytest_expiry_expired`` hook, and the debugger's paused clock.

Deadlines are 0.3 s; a test meant to expire hangs for 30 s, so it can only end by expiring.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.helpers import RunPytest

PHASES = """
    import time
    import pytest

    @pytest.fixture
    def hangs_in_setup():
        time.sleep(30)

    @pytest.fixture
    def hangs_in_teardown():
        yield
        time.sleep(30)

    def test_hangs_in_call():
        time.sleep(30)

    def test_hangs_in_setup(hangs_in_setup):
        pass

    def test_hangs_in_teardown(hangs_in_teardown):
        pass

    def test_passes():
        pass
    """

SLOW_AND_HUNG = """
    import time
    import pytest

    @pytest.mark.expires(0.3)
    def test_hangs():
        time.sleep(30)

    @pytest.mark.expires(1)
    def test_is_slow():
        time.sleep(0.6)

    def test_passes():
        pass
    """

RECORD_KEYS = {"nodeid", "phase", "deadline", "elapsed", "pids", "signals", "stacks"}
ELAPSED = r"(\d+\.\d\d)"


def assert_expiry_record(
    record: dict[str, Any], nodeid: str, phase: str, deadline: float, hung_in: str | None = None
) -> None:
    """One JSON record of an expiry: every documented key, and the test process's stack
    showing ``hung_in`` (by default the test function)."""
    assert set(record) >= RECORD_KEYS
    assert record["event"] == "expired"
    assert record["nodeid"] == nodeid
    assert record["phase"] == phase
    assert record["deadline"] == deadline
    assert deadline <= record["elapsed"] < deadline + 5
    assert record["pids"], record
    test_process = str(record["pids"][0])
    assert f"in {hung_in or nodeid.rsplit('::', maxsplit=1)[-1]}" in record["stacks"][test_process]


def assert_junit_expiry_failure(case: ET.Element, name: str) -> None:
    """A call-phase expiry in JUnit: a <failure> saying "expired", with the stacks."""
    assert case.find("error") is None
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "Expired: still running in call after " in failure.get("message", "")
    assert "--- stacks of pid" in failure.text
    assert f"in {name}" in failure.text


def expiry_property(case: ET.Element) -> list[str | None]:
    return [p.get("value") for p in case.iter("property") if p.get("name") == "expiry"]


# --- the terminal summary ---------------------------------------------------------------


def test_the_summary_lists_every_expired_test_with_its_phase_and_elapsed_time(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3")
    run.result.assert_outcomes(failed=1, passed=2, errors=2)
    run.result.stdout.re_match_lines(
        [
            r"=+ expiry =+",
            *[
                rf"EXPIRED test_phases.py::test_hangs_in_{phase} in {phase} after {ELAPSED} s "
                r"\(deadline 0.3 s\); processes signalled: 0"
                for phase in ("call", "setup", "teardown")
            ],
        ],
        consecutive=True,
    )
    for elapsed in re.findall(rf"EXPIRED .* after {ELAPSED} s", run.result.stdout.str()):
        assert 0.3 <= float(elapsed) < 5
    assert "test_passes" not in "\n".join(
        line for line in run.result.stdout.lines if line.startswith("EXPIRED")
    )


def test_the_failure_points_at_the_line_where_the_test_hangs(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The traceback ends in the test, not in the plugin's signal handler."""
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3", "test_phases.py::test_hangs_in_call")
    run.result.stdout.re_match_lines(
        [
            r">\s+time.sleep\(30\)",
            r"E\s+pytest_expiry.Expired: .*",
            "",
            r"test_phases.py:\d+: Expired",
        ],
        consecutive=True,
    )


def test_the_short_summary_line_states_the_cause_without_repeating_the_test_id(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # pytest cuts summary lines at the terminal's width
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3", "-rfE", "-k", "call or setup")
    run.result.stdout.re_match_lines(
        [
            rf"FAILED test_phases.py::test_hangs_in_call - pytest_expiry.Expired: "
            rf"still running in call after {ELAPSED} s \(deadline 0.3 s\)$",
            rf"ERROR test_phases.py::test_hangs_in_setup - pytest_expiry.Expired: "
            rf"still running in setup after {ELAPSED} s \(deadline 0.3 s\)$",
        ]
    )


# --- JUnit ------------------------------------------------------------------------------


def test_junit_records_an_expiry_in_the_call_as_a_failure_with_the_stacks(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3", "test_phases.py::test_hangs_in_call")
    assert_junit_expiry_failure(run.testcase("test_hangs_in_call"), "test_hangs_in_call")


def test_junit_records_an_expiry_in_fixture_setup_or_teardown_as_an_error(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3", "-k", "setup or teardown")
    for phase in ("setup", "teardown"):
        error = run.testcase(f"test_hangs_in_{phase}").find("error")
        assert error is not None and error.text is not None
        assert "still running in " + phase in error.get("message", "")
        assert "--- stacks of pid" in error.text


@pytest.mark.parametrize(
    "phase",
    [
        "call",
        "setup",
        "teardown",
    ],
)
def test_junit_has_an_expiry_property_for_an_expired_test(
    pytester: pytest.Pytester, run_pytest: RunPytest, phase: str
) -> None:
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3", f"test_phases.py::test_hangs_in_{phase}")
    [value] = expiry_property(run.testcase(f"test_hangs_in_{phase}"))
    assert value is not None
    assert re.fullmatch(rf"expired in {phase} after {ELAPSED} s", value)


# --- the JSON report --------------------------------------------------------------------


def test_the_json_report_has_one_record_per_expiry_and_per_slow_test(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_events=SLOW_AND_HUNG)
    run = run_pytest("--expiry-slow=0.3", "--expiry-report=out/report.json")
    run.result.assert_outcomes(failed=1, passed=2)
    document = json.loads((pytester.path / "out" / "report.json").read_text())
    assert document["expired"] == 1
    assert document["slow"] == 1
    assert document["exit_status"] == 1
    events = {event["nodeid"]: event for event in document["events"]}
    assert len(events) == len(document["events"]) == 2
    assert_expiry_record(
        events["test_events.py::test_hangs"], "test_events.py::test_hangs", "call", 0.3
    )
    slow = events["test_events.py::test_is_slow"]
    assert slow["event"] == "slow"
    assert slow["deadline"] == 1
    assert 0.3 <= slow["elapsed"] < 1


@pytest.mark.parametrize("how", ["--expiry-report", "ini expiry_report"])
def test_the_json_report_is_written_when_nothing_expired(
    pytester: pytest.Pytester, run_pytest: RunPytest, how: str
) -> None:
    pytester.makepyfile("def test_passes(): pass\n")
    if how == "--expiry-report":
        run = run_pytest("--expiry=5", "--expiry-report=report.json")
    else:
        pytester.makeini("[pytest]\nexpiry_report = report.json\n")
        run = run_pytest("--expiry=5")
    run.result.assert_outcomes(passed=1)
    document = json.loads((pytester.path / "report.json").read_text())
    assert document["events"] == []
    assert document["expired"] == document["slow"] == 0


@pytest.mark.parametrize("where", ["blocker/report.json", "/", "."])
def test_an_unwritable_json_report_path_is_a_usage_error_at_start(
    pytester: pytest.Pytester, run_pytest: RunPytest, where: str
) -> None:
    """Found before any test runs, not at the end of a long session."""
    pytester.makepyfile("import time\n\ndef test_it():\n    time.sleep(30)\n")
    (pytester.path / "blocker").write_text("a regular file, not a directory\n")
    run = run_pytest("--expiry=0.3", f"--expiry-report={where}", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "expiry-report" in run.output and where in run.output
    assert "INTERNALERROR" not in run.output
    assert "Traceback" not in run.output
    assert run.seconds < 10  # the hanging test never ran


# --- under xdist ------------------------------------------------------------------------


def test_under_xdist_the_json_report_and_junit_have_the_same_content(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        test_two="""
        import time

        def test_first_hangs():
            time.sleep(30)

        def test_second_hangs():
            time.sleep(30)
        """
    )
    run = run_pytest("-n", "2", "--expiry=0.3", "--expiry-report=report.json")
    run.result.assert_outcomes(failed=2)
    document = json.loads((pytester.path / "report.json").read_text())
    events = {event["nodeid"]: event for event in document["events"]}
    assert len(events) == len(document["events"]) == document["expired"] == 2
    for name in ("test_first_hangs", "test_second_hangs"):
        assert_expiry_record(events[f"test_two.py::{name}"], f"test_two.py::{name}", "call", 0.3)
        assert_junit_expiry_failure(run.testcase(name), name)
    run.result.stdout.re_match_lines(
        [rf"EXPIRED test_two.py::test_first_hangs in call after {ELAPSED} s"]
    )


# --- the pytest_expiry_expired hook -----------------------------------------------------


def test_the_expired_hook_is_called_once_per_expired_test_with_its_record(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makeconftest(
        """
        import json

        def pytest_expiry_expired(item, record):
            with open("hook-calls.jsonl", "a") as calls:
                calls.write(json.dumps({"item": item.nodeid, "record": record}) + "\\n")
        """
    )
    pytester.makepyfile(test_phases=PHASES)
    run = run_pytest("--expiry=0.3", "-k", "call or teardown or passes")
    run.result.assert_outcomes(failed=1, passed=2, errors=1)
    lines = (pytester.path / "hook-calls.jsonl").read_text().splitlines()
    calls = {call["item"]: call["record"] for call in map(json.loads, lines)}
    assert len(calls) == len(lines) == 2
    for phase in ("call", "teardown"):
        nodeid = f"test_phases.py::test_hangs_in_{phase}"
        hung_in = "hangs_in_teardown" if phase == "teardown" else None
        assert_expiry_record(calls[nodeid], nodeid, phase, 0.3, hung_in)


# --- debuggers --------------------------------------------------------------------------


def debug_for_a_second(pytester: pytest.Pytester) -> pytest.RunResult:
    """A test with a 0.5 s deadline that enters pdb, where the user spends 1 s (a command
    sleeps) before continuing. Without the paused clock, it expires in pdb and fails.

    ``run_pytest`` cannot feed stdin, so this runs ``pytester.run`` itself; the tests that
    call it request ``run_pytest`` all the same, for its process tag (inherited through the
    environment, with ``tests.helpers.NO_EXTRAS``) and its check that nothing is left running."""
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.expires(0.5)
        def test_debugged():
            breakpoint()
        """
    )
    result = pytester.run(
        sys.executable, "-m", "pytest",
        stdin=b"import time; time.sleep(1)\ncontinue\n", timeout=60,
    )  # fmt: skip
    assert "PDB set_trace" in result.stdout.str()
    return result


def test_time_spent_in_pdb_does_not_count_against_the_deadline(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    result = debug_for_a_second(pytester)
    result.assert_outcomes(passed=1)
    output = result.stdout.str() + result.stderr.str()
    assert "Expired" not in output
    assert "expired" not in output


def test_time_spent_in_pdb_does_not_make_a_test_slow(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    result = debug_for_a_second(pytester)
    result.assert_outcomes(passed=1)
    assert "SLOW" not in result.stdout.str()
