"""pytest-rerunfailures and pytest-expiry, end to end, with the real plugin.

Each attempt of a test is a run of its own: it gets a fresh deadline, an expired attempt is
rerun like any failed one, the outcome is the last attempt's, and every expired attempt keeps
its account (terminal summary, JSON, JUnit). Under xdist a hard-killed test is rerun on the
replacement worker when reruns are asked for (rerunfailures' ``pytest_handlecrashitem``).
Skipped where pytest-rerunfailures is not installed (the compatibility job of ``.ci/run``
installs it).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.helpers import Run, RunPytest

try:
    from tests.helpers import leaked_in_phases
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import leaked_in_phases  # type: ignore[no-redef,import-not-found]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pytest_rerunfailures") is None,
    reason="pytest-rerunfailures is not installed (the compatibility job of .ci/run installs it)",
)


# each test hangs on its first attempt only: the marker file says it already ran once
HANGS_ONCE = """
    import time
    from pathlib import Path

    import pytest

    def first_attempt(name):
        marker = Path(__file__).parent / f"{name}.ran"
        first = not marker.exists()
        marker.write_text("ran")
        return first

    def test_hangs_then_passes():
        if first_attempt("hangs"):
            time.sleep(30)

    @pytest.mark.flaky(reruns=1)
    def test_marked_flaky():
        if first_attempt("flaky"):
            time.sleep(30)

    def test_fails_slowly():
        time.sleep(0.6)
        assert False, "a plain failure"
"""

SWALLOWS_ONCE = """
    import time
    from pathlib import Path

    def test_cannot_be_interrupted():
        marker = Path(__file__).parent / "ran"
        if not marker.exists():
            marker.write_text("ran")
            end = time.monotonic() + 30
            while time.monotonic() < end:
                try:
                    time.sleep(30)
                except BaseException:
                    pass

    def test_other():
        pass
"""


def events(path: Path) -> list[dict[str, Any]]:
    document: dict[str, Any] = json.loads(path.read_text())
    return [e for e in document["events"] if e["event"] in ("expired", "hard_killed")]


def outcomes(run: Run) -> dict[str, int]:
    parsed: dict[str, int] = run.result.parseoutcomes()
    return {("rerun" if name == "reruns" else name): n for name, n in parsed.items()}


def properties(run: Run, name: str) -> list[str]:
    assert run.junit is not None
    return [
        prop.get("value", "")
        for case in run.junit.iter("testcase")
        if case.get("name") == name
        for prop in case.iter("property")
        if prop.get("name") == "expiry"
    ]


@pytest.fixture
def hangs_once(pytester: pytest.Pytester, run_pytest: RunPytest) -> Run:
    pytester.makepyfile(test_reruns=HANGS_ONCE)
    return run_pytest("--reruns=1", "--expiry=1", "--expiry-report=report.json")


def test_a_test_that_hangs_once_passes_on_its_rerun(hangs_once: Run) -> None:
    assert outcomes(hangs_once) == dict(passed=2, failed=1, rerun=3), hangs_once.output
    assert "swallowed" not in hangs_once.output


def test_a_failure_that_takes_most_of_the_deadline_is_rerun_not_expired(hangs_once: Run) -> None:
    """Two attempts of 0.6 s against a 1 s deadline: each attempt has a deadline of its own."""
    output = hangs_once.output
    assert "AssertionError: a plain failure" in output
    assert "test_fails_slowly expired" not in output
    assert "EXPIRED test_reruns.py::test_fails_slowly" not in output


def test_the_expired_attempt_keeps_its_account(hangs_once: Run, pytester: pytest.Pytester) -> None:
    hangs_once.result.stdout.fnmatch_lines(
        [
            "EXPIRED test_reruns.py::test_hangs_then_passes in call after 1.* s "
            "(deadline 1 s); processes signalled: 0; attempt 1, run again",
            "EXPIRED test_reruns.py::test_marked_flaky in call after 1.* s "
            "(deadline 1 s); processes signalled: 0; attempt 1, run again",
        ]
    )
    recorded = events(pytester.path / "report.json")
    assert sorted(e["nodeid"].rpartition("::")[2] for e in recorded) == [
        "test_hangs_then_passes",
        "test_marked_flaky",
    ]
    assert all(e["attempt"] == 1 and e["run_again"] for e in recorded), recorded
    assert all(e["stacks"] or e["processes"] for e in recorded), recorded


def test_junit_names_the_attempt_that_expired(hangs_once: Run) -> None:
    """The rerun attempt's testcase carries the expiry; the final one says it was attempt 1."""
    values = properties(hangs_once, "test_hangs_then_passes")
    assert values[0].startswith("expired in call after 1."), values
    assert values[-1].startswith("attempt 1: expired in call after 1."), values


def test_every_attempt_has_a_deadline_of_its_own(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """Three hung attempts: each expires at about the deadline, none inherits a spent one."""
    pytester.makepyfile(test_always="import time\n\ndef test_always_hangs():\n    time.sleep(30)\n")
    run = run_pytest("--reruns=2", "--expiry=0.5", "--expiry-report=report.json")
    assert outcomes(run) == dict(failed=1, rerun=2), run.output
    recorded = events(pytester.path / "report.json")
    assert [e["attempt"] for e in recorded] == [1, 2, 3]
    assert all(0.5 <= e["elapsed"] < 1.5 for e in recorded), recorded
    assert [bool(e.get("run_again")) for e in recorded] == [True, True, False]


needs_xdist = pytest.mark.skipif(
    importlib.util.find_spec("xdist") is None, reason="pytest-xdist is not installed"
)


@needs_xdist
def test_under_xdist_a_hard_killed_test_is_rerun_on_the_new_worker(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_swallows=SWALLOWS_ONCE)
    run = run_pytest(
        "-n", "1", "--reruns=1", "--expiry=0.5", "--expiry-grace=0.3", "--expiry-report=report.json"
    )
    assert outcomes(run) == dict(passed=2, rerun=1), run.output
    run.result.stdout.fnmatch_lines(
        ["HARD-KILLED test_swallows.py::test_cannot_be_interrupted *; attempt 1, run again"]
    )
    [killed] = events(pytester.path / "report.json")
    assert killed["event"] == "hard_killed" and killed["run_again"]


@needs_xdist
def test_under_xdist_without_reruns_a_hard_killed_test_is_not_run_again(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_swallows=SWALLOWS_ONCE)
    run = run_pytest("-n", "1", "--expiry=0.5", "--expiry-grace=0.3")
    assert outcomes(run) == dict(passed=1, failed=1), run.output
    assert "run again" not in run.output
    assert "worker 'gw0' crashed" not in run.output


def test_a_leak_is_charged_to_its_phase_though_reports_are_logged_after_the_attempt(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    phases = leaked_in_phases(pytester, run_pytest, "--reruns=1")
    assert phases == {"test_setup": ["setup"], "test_call": ["call"], "test_teardown": ["teardown"]}


LEAKS_ONCE = """
    import subprocess
    import sys
    from pathlib import Path

    def test_leaks_on_its_first_attempt():
        marker = Path(__file__).parent / "leaked.ran"
        if not marker.exists():
            marker.write_text("ran")
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
"""


def test_a_test_failed_for_a_leak_is_rerun_like_any_failed_one(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """``--expiry-leaks=fail`` fails the attempt that leaked as its teardown report is made,
    where rerunfailures decides: the attempt is rerun, and the next one passes."""
    pytester.makepyfile(test_leaks=LEAKS_ONCE)
    run = run_pytest("--reruns=1", "--expiry-leaks=fail")
    # as for any teardown that fails once: the first call's pass, the rerun, the second pass
    assert outcomes(run) == dict(passed=2, rerun=1), run.output
    assert "left 1 processes running (ended)" in run.output
