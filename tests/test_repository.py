"""The repository keeps its promises to a newcomer: CI runs exactly what the README says."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    python3 -m venv .venv")]


def test_the_readme_has_exactly_two_setup_commands_an_example_run_and_the_test_run() -> None:
    example, tests = _readme_commands()
    assert example.endswith("pytest examples --expiry=1")
    assert tests.endswith(".venv/bin/pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines
