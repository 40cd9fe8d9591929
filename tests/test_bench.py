"""The benchmark (bench/run.py) on a tiny configuration: every row of its table is rendered
into RESULTS with a verdict, and the rows it measures are measured. No timing is asserted."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
MEASURED = ("plain", "slope", "worker", "startup", "real", "latency", "hardkill")


def test_bench_renders_every_row_with_a_verdict(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        run = importlib.import_module("run")
        output = tmp_path / "RESULTS.md"
        argv = ["--quick", "--tests", "50", "--repeats", "1", "--only", ",".join(MEASURED)]
        text = run.main([*argv, "--output", str(output)])
    finally:
        sys.path.remove(str(BENCH))
    assert output.read_text() == text
    assert "$" not in text  # every placeholder of the template was filled
    verdicts = {}
    for row in run.ROWS:
        line = next(line for line in text.splitlines() if line.startswith(f"| {row.name} |"))
        verdicts[row.key] = line.rstrip(" |").rsplit("| ", 1)[1]
    assert all(verdicts[key] in ("**met**", "**missed**") for key in MEASURED), verdicts
    assert all(v == "not measured" for k, v in verdicts.items() if k not in MEASURED), verdicts
    assert re.search(r"\| trivial 50 \| expiry \| .*--expiry=30 \| 1 \|", text)
    assert "CPU per worker up to its first test (8 workers)" in text  # 4 workers, 2 runs


@pytest.fixture
def ab_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])
    )


@pytest.mark.usefixtures("ab_path")
def test_the_per_test_ab_plugin_splits_one_session_into_halves(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/pertest_ab.py: every other test runs without the plugin's per-test parts, and
    the session ends with one line comparing the halves' medians."""
    pytester.makepyfile("\n".join(f"def test_{n}(): pass" for n in range(120)))
    out = pytester.path / "ab.txt"
    monkeypatch.setenv("PERTEST_AB_OUT", str(out))
    result = pytester.runpytest_subprocess("-p", "pertest_ab", "--expiry=30", timeout=120)
    result.assert_outcomes(passed=120)
    line = out.read_text()
    assert re.fullmatch(
        r"per-test parts \(scopes,leaks,session\): [+-]\d+\.\d\d us a test "
        r"\(median \d+\.\d us with, \d+\.\d us without, 60 tests each\)\n",
        line,
    ), line


@pytest.mark.usefixtures("ab_path")
def test_a_test_without_the_part_runs_without_it_from_its_start(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PERTEST_AB_PARTS=leaks, leak detection watches the first and third of four tests
    that each leave a busy thread, and no other: each of those two is charged its own thread
    (a part switched on too late would see a test's end without its start, and charge the
    third test with the second one's thread too)."""
    pytester.makepyfile(
        """
        import threading, time
        def _busy():
            time.sleep(0.2)
        def _leave_a_thread():
            threading.Thread(target=_busy).start()
        test_0 = test_1 = test_2 = test_3 = _leave_a_thread
        """
    )
    monkeypatch.setenv("PERTEST_AB_PARTS", "leaks")
    result = pytester.runpytest_subprocess("-p", "pertest_ab", "--expiry=30", timeout=120)
    result.assert_outcomes(passed=4)
    leaked = [
        (line.split("'")[1], line.rsplit("::", 1)[1])
        for line in result.outlines
        if line.startswith("LEAKED thread")
    ]
    assert leaked == [("Thread-1 (_busy)", "test_0"), ("Thread-3 (_busy)", "test_2")], leaked
    result.stdout.fnmatch_lines(["per-test parts (leaks): * us a test (median *, 2 tests each)"])


@pytest.mark.usefixtures("ab_path")
def test_an_unknown_part_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile("def test_a(): pass")
    monkeypatch.setenv("PERTEST_AB_PARTS", "leaks,scope")
    result = pytester.runpytest_subprocess("-p", "pertest_ab", "--expiry=30", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*PERTEST_AB_PARTS names scope: use any of scopes, leaks, session*"]
    )
