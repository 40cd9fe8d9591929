"""The bundled example suite does what the README says: every hang fails fast, the rest pass."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples" / "test_examples.py"


def test_the_example_suite_hangs_in_many_ways_and_finishes_in_seconds(pytester, run_pytest):
    pytester.makepyfile(test_examples=EXAMPLES.read_text())
    run = run_pytest("--expiry=1")
    run.result.assert_outcomes(failed=5, passed=4, errors=1)
    assert run.output.count("EXPIRED test_examples.py::") == 6
    assert "SLOW test_examples.py::test_is_slow_but_in_time" in run.output
    assert run.seconds < 60
