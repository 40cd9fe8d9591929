"""Learned deadlines (``--expiry-learn``, issue #14), end to end: real pytest sessions, one
after the other in the same directory, sharing a history file.

Floors are small (``--expiry-learn-min=0.5``) and flat deadlines long (10 s), so a test that
expires at its learned deadline is told from one that expires at the flat deadline by its
elapsed time; a test meant to hang sleeps 30 s, so it can only end by expiring. Every test
checks that the sessions left no process running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    from tests.helpers import XDIST, inner_env, kill_tagged, left_running
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import XDIST, inner_env, kill_tagged, left_running  # type: ignore[no-redef,import-not-found]

FLAT = "--expiry=10"
LEARN = ("--expiry-learn=5", "--expiry-learn-min=0.5")
"""5 x 50 ms is below the floor: a 50 ms test's learned deadline is the floor, 0.5 s."""
HISTORY = "--expiry-history=history.json"


@dataclass
class Ran:
    returncode: int
    output: str

    def report(self, directory: Path) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((directory / "report.json").read_text())
        return document

    def header(self) -> str:
        lines = [line for line in self.output.splitlines() if "learned deadlines" in line]
        assert len(lines) == 1, self.output
        return lines[0]


@dataclass
class Sessions:
    """Inner pytest sessions in ``cwd``; the pytest cache stays on unless a run turns it off
    (unlike the shared helpers' sessions, which never use it)."""

    cwd: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)

    def write(self, name: str, source: str) -> None:
        (self.cwd / name).write_text(textwrap.dedent(source))

    def run(self, *args: str, timeout: float = 60.0, **env: str) -> Ran:
        argv = [sys.executable, "-m", "pytest", "-p", "no:hypothesispytest", *args]
        process = subprocess.Popen(
            argv,
            cwd=self.cwd,
            env=inner_env(self.tag, **env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"pytest {' '.join(args)} did not end in {timeout} s:\n{output.decode()}")
        return Ran(process.returncode, output.decode(errors="replace"))

    def close(self) -> None:
        left = left_running(self.tag)
        kill_tagged(self.tag)
        if left:
            pytest.fail("processes left running:\n" + "\n".join(left))


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[Sessions]:
    started = Sessions(tmp_path)
    yield started
    started.close()


def history(directory: Path, name: str = "history.json") -> dict[str, list[float]]:
    document = json.loads((directory / name).read_text())
    assert document["format"] == "pytest-expiry-history", document
    tests: dict[str, list[float]] = document["tests"]
    return tests


def events(directory: Path) -> dict[str, dict[str, Any]]:
    """The expiry events of ``report.json`` by test name."""
    document = json.loads((directory / "report.json").read_text())
    return {e["nodeid"].rpartition("::")[2]: e for e in document["events"]}


QUICK_THEN_HUNG = """
    import os
    import time
    import pytest

    HUNG = os.environ.get("HUNG") == "1"

    def test_quick():
        time.sleep(30 if HUNG else 0.05)

    @pytest.mark.expires(0.3)
    def test_marked():
        time.sleep(30 if HUNG else 0.05)

    if HUNG:
        def test_new():
            time.sleep(1.0)  # past the floor, well inside the flat deadline
    """


def test_after_one_recorded_run_a_hung_test_expires_at_the_floor_and_a_new_one_keeps_the_flat_deadline(  # noqa: E501
    sessions: Sessions,
) -> None:
    sessions.write("test_quick.py", QUICK_THEN_HUNG)
    recorded = sessions.run(FLAT, *LEARN, HISTORY, "-p", "no:cacheprovider")
    assert recorded.returncode == 0, recorded.output
    assert "learned deadlines (x5, min 0.5 s) for 0 of 2 tests" in recorded.header()
    assert set(history(sessions.cwd)) == {"test_quick.py::test_quick", "test_quick.py::test_marked"}

    hung = sessions.run(
        FLAT, *LEARN, HISTORY, "-p", "no:cacheprovider", "--expiry-report=report.json", HUNG="1"
    )
    assert hung.returncode == 1, hung.output
    assert "2 failed, 1 passed" in hung.output
    assert "expiry: 10 s per test; learned deadlines (x5, min 0.5 s) for 1 of 3 tests" in (
        hung.header()
    )
    quick, marked = events(sessions.cwd)["test_quick"], events(sessions.cwd)["test_marked"]
    assert quick["deadline_source"] == "learned"
    assert quick["deadline"] == 0.5
    assert 0.5 <= quick["elapsed"] < 2.0, quick
    assert quick["learned"]["runs"] == 1 and 0.05 <= quick["learned"]["longest"] < 0.3
    assert (
        "test_quick.py::test_quick expired in call after "
        f"{quick['elapsed']:.2f} s (learned deadline 0.5 s: 5 x "
    ) in hung.output
    assert "longest of 1 run; at least --expiry-learn-min 0.5 s)" in hung.output
    # the marker's 0.3 s is shorter than what its history teaches: never more than that
    assert marked["deadline_source"] == "marker" and marked["deadline"] == 0.3
    assert "learned" not in marked
    # a test that failed records nothing; the new test's passing run is recorded
    after = history(sessions.cwd)
    assert len(after["test_quick.py::test_quick"]) == 1
    assert len(after["test_quick.py::test_new"]) == 1


VARYING = """
    import os
    import random
    import time
    import pytest

    @pytest.mark.parametrize("n", range(50))
    def test_varies(n):
        # from 30 to 90 ms: within 3x of any recorded run, and the factor is 10
        random.seed(f"{os.environ['RUN']}-{n}")
        time.sleep(random.uniform(0.03, 0.09))
    """


def test_a_test_whose_duration_varies_within_the_factor_never_expires(sessions: Sessions) -> None:
    """50 test ids, each run three times (150 runs, 100 of them under a learned deadline);
    the floor is low (50 ms) so that the factor, not the floor, decides."""
    sessions.write("test_varying.py", VARYING)
    args = (FLAT, "--expiry-learn=10", "--expiry-learn-min=0.05", HISTORY, "-q")
    for run in range(3):
        ran = sessions.run(*args, "--expiry-report=report.json", RUN=str(run))
        assert ran.returncode == 0, ran.output
        assert "50 passed" in ran.output
        assert f"for {0 if run == 0 else 50} of 50 tests" in ran.header()
        assert json.loads((sessions.cwd / "report.json").read_text())["expired"] == 0
    recorded = history(sessions.cwd)
    assert len(recorded) == 50 and all(len(runs) == 3 for runs in recorded.values())


@pytest.mark.parametrize(
    "content",
    ['{"format": "pytest-expiry-history", "tests": {"x": [1,', '{"tests": []}', "[1, 2, 3]\n"],
    ids=["corrupt", "foreign", "foreign-list"],
)
def test_a_corrupt_or_foreign_history_is_a_warning_and_is_ignored(
    sessions: Sessions, content: str
) -> None:
    sessions.write("test_one.py", "import time\n\ndef test_one():\n    time.sleep(1.0)\n")
    (sessions.cwd / "history.json").write_text(content)
    ran = sessions.run(FLAT, *LEARN, HISTORY, "-p", "no:cacheprovider")
    assert ran.returncode == 0, ran.output
    assert "1 passed" in ran.output
    warnings = [line for line in ran.output.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, ran.output
    assert "pytest-expiry: WARNING the deadline history history.json is ignored: " in warnings[0]
    assert "delete it to start a new history" in warnings[0]
    assert "Traceback" not in ran.output and "INTERNALERROR" not in ran.output
    assert (sessions.cwd / "history.json").read_text() == content  # not ours to replace


@pytest.mark.skipif(not XDIST, reason="needs pytest-xdist")
def test_under_xdist_the_controller_merges_what_every_worker_recorded(sessions: Sessions) -> None:
    sessions.write(
        "test_spread.py",
        """
        import os
        import time
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_spread(n):
            with open(f"worker-{n}", "w") as out:
                out.write(os.environ["PYTEST_XDIST_WORKER"])
            time.sleep(30 if os.environ.get("HUNG") == str(n) else 0.05)
        """,
    )
    args = (FLAT, *LEARN, HISTORY, "-p", "no:cacheprovider", "-n", "2")
    recorded = sessions.run(*args)
    assert recorded.returncode == 0, recorded.output
    workers = {(sessions.cwd / f"worker-{n}").read_text() for n in range(6)}
    tests = history(sessions.cwd)
    assert set(tests) == {f"test_spread.py::test_spread[{n}]" for n in range(6)}
    assert workers == {"gw0", "gw1"}, "both workers' tests are in the history"

    hung = sessions.run(*args, "--expiry-report=report.json", HUNG="3")
    assert hung.returncode == 1, hung.output
    assert "1 failed, 5 passed" in hung.output
    assert "learned deadlines (x5, min 0.5 s) for 6 of 6 tests" in hung.header()
    event = events(sessions.cwd)["test_spread[3]"]
    assert event["deadline_source"] == "learned" and event["deadline"] == 0.5
    assert event["elapsed"] < 2.0
    assert all(len(runs) == (1 if "[3]" in t else 2) for t, runs in history(sessions.cwd).items())


def test_without_the_cache_and_without_a_path_nothing_is_written(sessions: Sessions) -> None:
    sessions.write("test_one.py", "def test_one():\n    pass\n")
    before = set(os.listdir(sessions.cwd))
    ran = sessions.run(FLAT, *LEARN, "-p", "no:cacheprovider")
    assert ran.returncode == 0, ran.output
    assert (
        "expiry: 10 s per test; no deadlines learned: pytest's cache is disabled "
        "(-p no:cacheprovider) and no --expiry-history"
    ) in ran.output
    written = set(os.listdir(sessions.cwd)) - before
    assert written <= {"__pycache__"}  # pytest's bytecode of test_one.py, where it may write it


def test_by_default_the_history_is_kept_in_pytests_cache(sessions: Sessions) -> None:
    sessions.write("test_quick.py", QUICK_THEN_HUNG)
    assert sessions.run(FLAT, *LEARN).returncode == 0
    cached = sessions.cwd / ".pytest_cache" / "d" / "expiry"
    assert "test_quick.py::test_quick" in history(cached)
    hung = sessions.run(FLAT, *LEARN, "--expiry-report=report.json", HUNG="1")
    assert "2 failed, 1 passed" in hung.output, hung.output
    assert events(sessions.cwd)["test_quick"]["deadline_source"] == "learned"


def test_a_func_only_test_records_its_call_alone_and_a_flat_deadline_names_its_source(
    sessions: Sessions,
) -> None:
    sessions.write(
        "test_fixture.py",
        """
        import os
        import time
        import pytest

        @pytest.fixture
        def slow_setup():
            time.sleep(0.6)

        @pytest.mark.expires(10, func_only=True)
        def test_call_only(slow_setup):
            time.sleep(0.01)

        def test_whole(slow_setup):
            time.sleep(30 if os.environ.get("HUNG") else 0.01)
        """,
    )
    ran = sessions.run("--expiry-learn=10", HISTORY, "-p", "no:cacheprovider")
    assert ran.returncode == 0, ran.output
    tests = history(sessions.cwd)
    assert tests["test_fixture.py::test_call_only"][0] < 0.3  # not the 0.6 s setup
    assert tests["test_fixture.py::test_whole"][0] >= 0.6  # setup, call and teardown
    hung = sessions.run(
        "--expiry-history=other.json", "-p", "no:cacheprovider", "--expiry-report=report.json",
        HUNG="1", PYTEST_EXPIRY="1.5",
    )  # fmt: skip
    event = events(sessions.cwd)["test_whole"]
    assert event["deadline_source"] == "env" and event["deadline"] == 1.5, hung.output
    assert "(deadline 1.5 s)" in hung.output
