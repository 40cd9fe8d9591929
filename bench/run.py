#!/usr/bin/env python3
"""The pytest-expiry benchmark, in one command::

    python3 bench/run.py            # full run (about 9 minutes on 2 cores), writes bench/RESULTS.md
    python3 bench/run.py --quick    # fewer repeats (under 3 minutes), writes bench/.work/

This file only prepares the ground, with the standard library: it creates a virtualenv under
``bench/.work/venv``, installs this repository into it (not editable, so what is measured is
what users get) together with pytest-timeout and pytest-xdist, then hands over to
``bench/measure.py`` run by that virtualenv's python, which measures every configuration and
prints the markdown tables. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / ".work"
VENV = WORK / "venv"
RESULTS = BENCH / "RESULTS.md"
QUICK_RESULTS = WORK / "RESULTS-quick.md"
INSTALLED = VENV / ".bench-revision"  # the repository's revision that was installed
SECTIONS = ("overhead", "xdist", "startup", "latency", "hardkill", "tree", "idle", "hotpath")
COMPETITORS = ("pytest-timeout", "pytest-xdist")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Measure pytest-expiry against bare pytest and pytest-timeout; print "
        "markdown tables and write them to bench/RESULTS.md.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 repeats instead of 7, a 10 s idle test"
    )
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="runs of each timed configuration (default 7)"
    )
    parser.add_argument(
        "--only",
        metavar="SECTIONS",
        help=f"comma-separated subset of: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help=f"where the markdown goes (default {RESULTS.relative_to(REPO)}; with --quick or "
        f"--only {QUICK_RESULTS.relative_to(REPO)})",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the bench's virtualenv (default: the one running this script)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="measure what is installed in bench/.work/venv, without reinstalling the repository",
    )
    return parser


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"bench: pip install {' '.join(args)} failed")


def git_revision() -> str:
    """The repository's commit, and whether the installed files differ from it."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        command = ["git", "-C", str(REPO), *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return "unknown revision"
    # plumbing only: neither refreshes nor writes the index
    dirty = git("diff-index", "--quiet", "HEAD", "--", "pytest_expiry", "pyproject.toml")
    return head.stdout.strip() + (" + uncommitted changes" if dirty.returncode else "")


def _interpreter_id(python: str) -> str:
    code = "import sys; print(sys.version, getattr(sys, '_base_executable', sys.executable))"
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def ensure_venv(python: str, install: bool) -> Path:
    """The bench's virtualenv, with the repository installed as it is now."""
    venv_python = VENV / "bin" / "python"
    marker = VENV / ".bench-interpreter"
    wanted = _interpreter_id(python)
    fresh = not venv_python.exists() or not marker.exists() or marker.read_text() != wanted
    revision = git_revision()  # before installing: the files may change while pip runs
    if fresh:
        sys.stderr.write(f"bench: creating {VENV.relative_to(REPO)} with {python}\n")
        subprocess.run([python, "-m", "venv", "--clear", str(VENV)], check=True)
        _pip(venv_python, str(REPO), *COMPETITORS)
        marker.write_text(wanted)
    elif install:
        sys.stderr.write(f"bench: installing {REPO} into {VENV.relative_to(REPO)}\n")
        _pip(venv_python, "--force-reinstall", "--no-deps", str(REPO))
    if fresh or install:
        INSTALLED.write_text(revision)
    return venv_python


def main() -> None:
    options = build_parser().parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    venv_python = ensure_venv(options.python, not options.no_install)
    measure = BENCH / "measure.py"
    os.execv(venv_python, [str(venv_python), str(measure), *sys.argv[1:]])


if __name__ == "__main__":
    main()
