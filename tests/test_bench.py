"""The benchmark (bench/run.py) on a tiny configuration: every row of its table is rendered
into RESULTS with a verdict, and the rows it measures are measured. No timing is asserted."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
MEASURED = ("plain", "slope", "startup", "real", "latency", "hardkill")


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
