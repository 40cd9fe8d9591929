"""The bundled example suite does what the README says: every hang fails fast, the rest pass."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.helpers import RunPytest

EXAMPLES = Path(__file__).parents[2] / "examples" / "test_examples.py"


def test_the_example_suite_hangs_in_many_ways_and_finishes_in_seconds(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_examples=EXAMPLES.read_text())
    run = run_pytest("--expiry=1")
    run.result.assert_outcomes(failed=5, passed=4, errors=1)
    assert run.output.count("EXPIRED test_examples.py::") == 6
    assert "SLOW test_examples.py::test_is_slow_but_in_time" in run.output
    assert run.seconds < 60


README = Path(__file__).parents[2] / "README.md"


def shape(line: str) -> str:
    """A line with what differs between two runs made alike: times, pids, thread ids, line
    numbers, absolute paths, command lines, the width of rules."""
    line = re.sub(r'"[^"]*/([^"/]+)"', r'"\1"', line)  # quoted absolute paths: the file name
    line = re.sub(r"(?<!\S)/\S*/([^/\s]+\.py:)", r"\1", line)  # /abs/x.py:12: -> x.py:12:
    line = re.sub(r"0x[0-9a-f]+", "X", line)
    line = re.sub(r"\d+\.\d+", "T", line)
    line = re.sub(r"(pid|line|thread|\.\.\.)\s+\d+", r"\1 N", line)
    line = re.sub(r"\.py:\d+", ".py:N", line)
    # who ends a hung subprocess first is a race: the watchdog's SIGTERM, or subprocess.run's
    # own kill once Expired reaches it (on a loaded machine); tests/e2e/test_hangs.py checks
    # the signals, this test the lines' form
    line = re.sub(r"signals: \S+.*", "signals: S", line)  # and the command line after it
    line = re.sub(r"processes signalled: \d+", "processes signalled: N", line)
    line = re.sub(r"([=-])\1{2,}", r"\1", line)
    return " ".join(line.split())


def readme_samples() -> list[str]:
    section = README.read_text().split("## What you see", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_shows_what_a_run_of_the_example_prints(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # the width the README's samples were taken at
    for variable in ("CI", "BUILD_NUMBER"):  # on CI pytest does not shorten summary lines
        monkeypatch.delenv(variable, raising=False)
    pytester.mkdir("examples")
    (pytester.path / "examples" / "test_examples.py").write_text(EXAMPLES.read_text())
    run = run_pytest("examples", "--expiry=1", "-p", "no:randomly", junit=False)
    run.result.assert_outcomes(failed=5, passed=4, errors=1)
    printed = {shape(line) for line in run.result.stdout.lines}
    samples = readme_samples()
    assert len(samples) > 20
    missing = [line for line in samples if shape(line) not in printed]
    assert not missing, "README lines the run did not print:\n" + "\n".join(missing)
