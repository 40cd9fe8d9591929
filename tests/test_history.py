"""The history file and learned deadlines (``pytest_expiry.history``), and the option values
of ``--expiry-learn`` and ``--expiry-learn-min``.

Contracts checked: a learned deadline is ``max(floor, factor x longest)``, and it is used only
when it is shorter than the deadline without learning; reading never raises for what is in
the file (corrupt or foreign content is a problem's text, and such a file is not ours to
replace); writing is atomic (a failure leaves the old file and no temporary file); each test
keeps its last ``KEEP`` passing durations.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import pytest

from pytest_expiry import history
from pytest_expiry.history import (
    FORMAT,
    KEEP,
    VERSION,
    Learned,
    learned_deadline,
    merge,
    read_history,
    write_history,
)
from pytest_expiry.learning import Learning
from pytest_expiry.options import learn_factor, learn_min
from pytest_expiry.settings import Settings

SETTINGS = Settings(
    default=60.0, grace=2.0, scale=1.0, func_only=False, slow=0.5, report=None,
    timeout_compat=False, collect=0.0, exit=0.0, session=0.0, leaks="off",
    child_stacks="off", learn=10.0, learn_min=5.0,
)  # fmt: skip


def ours(tests: object, version: object = VERSION) -> str:
    return json.dumps({"format": FORMAT, "version": version, "tests": tests})


# --- the learned deadline ------------------------------------------------------------------


def test_a_learned_deadline_is_the_factor_times_the_longest_run_but_at_least_the_floor() -> None:
    assert learned_deadline([], 10, 5) is None
    assert learned_deadline([0.2, 1.5, 0.7], 10, 5) == Learned(15.0, 10, 1.5, 3, 5)
    assert learned_deadline([0.05], 10, 5) == Learned(5.0, 10, 0.05, 1, 5)


def test_a_learned_deadline_says_how_it_was_learned() -> None:
    assert Learned(15.0, 10, 1.5, 3, 5).describe() == (
        "learned deadline 15 s: 10 x 1.5 s, longest of 3 runs"
    )
    assert Learned(5.0, 10, 0.05, 1, 5).describe() == (
        "learned deadline 5 s: 10 x 0.05 s, longest of 1 run; at least --expiry-learn-min 5 s"
    )


def test_learning_only_ever_shortens_a_deadline() -> None:
    learning = Learning(SETTINGS, {"a": [0.1], "b": [10.0], "c": [1.0]}, record=False)
    assert learning.learn("a", 60.0) == Learned(5.0, 10, 0.1, 1, 5)
    assert learning.learn("b", 60.0) is None  # 100 s learned: the flat 60 s stands
    assert learning.learn("c", 10.0) is None  # 10 s learned: not shorter than 10 s
    assert learning.learn("c", 0.0) is None  # no deadline: learning adds none
    assert learning.learn("new", 60.0) is None  # no history
    off = Learning(replace(SETTINGS, learn=0.0), {"a": [0.1]}, record=True)
    assert off.learn("a", 60.0) is None


# --- reading -------------------------------------------------------------------------------


def test_a_missing_or_empty_file_is_an_empty_history_that_may_be_written(tmp_path: Path) -> None:
    for found in (read_history(str(tmp_path / "absent.json")), _read(tmp_path, "  \n")):
        assert (found.durations, found.problem, found.replaceable) == ({}, None, True)


def _read(tmp_path: Path, text: str) -> history.History:
    path = tmp_path / "history.json"
    path.write_text(text)
    return read_history(str(path))


def test_a_history_is_read_and_keeps_the_last_runs_of_each_test(tmp_path: Path) -> None:
    found = _read(tmp_path, ours({"t::a": [1, 2.5], "t::b": list(range(KEEP + 3))}))
    assert found.problem is None and found.replaceable
    assert found.durations == {"t::a": [1.0, 2.5], "t::b": [float(v) for v in range(3, KEEP + 3)]}


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"format": "pytest-expiry-history", "tests": {', "corrupt: not JSON"),
        ("<<<<<<< HEAD\n", "corrupt: not JSON"),
        ("[" * 100_000, "corrupt: not JSON"),
        ('{"tests": {}}', "not a pytest-expiry history"),
        ("[1, 2]", "not a pytest-expiry history"),
        (ours({}, version=2), "format version 2, this pytest-expiry reads version 1"),
        (ours([]), 'corrupt: "tests" is not an object'),
        (ours({"t::a": 1.0}), "corrupt: the entry of 't::a' is not a list of durations"),
        (ours({"t::a": [-1]}), "the entry of 't::a' is not a list of durations"),
        (ours({"t::a": [True]}), "the entry of 't::a' is not a list of durations"),
        (ours({"t::a": ["1"]}), "the entry of 't::a' is not a list of durations"),
        ('{"format": "pytest-expiry-history", "version": 1, "tests": {"t": [NaN]}}', "entry"),
    ],
)
def test_corrupt_or_foreign_content_is_ignored_with_one_clear_problem(
    tmp_path: Path, text: str, why: str
) -> None:
    found = _read(tmp_path, text)
    assert found.durations == {}
    assert found.replaceable is False
    assert found.problem is not None
    assert f"the deadline history {tmp_path / 'history.json'} is ignored: " in found.problem
    assert why in found.problem
    assert "delete it to start a new history, or give --expiry-history another path" in (
        found.problem
    )


def test_a_file_that_cannot_be_read_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    found = read_history(str(tmp_path))  # a directory
    assert found.durations == {} and not found.replaceable
    assert found.problem is not None and "cannot read the deadline history" in found.problem
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    assert read_history(str(tmp_path / "binary.json")).problem is not None


# --- merging and writing -------------------------------------------------------------------


def test_new_runs_are_appended_and_only_the_last_ones_kept() -> None:
    old = {"a": [1.0, 2.0, 3.0, 4.0, 5.0], "gone": [1.0]}
    assert merge(old, {"a": [6.0, 7.0], "new": [0.5]}) == {
        "a": [3.0, 4.0, 5.0, 6.0, 7.0],
        "gone": [1.0],
        "new": [0.5],
    }
    assert old["a"] == [1.0, 2.0, 3.0, 4.0, 5.0]  # not changed in place


def test_a_written_history_reads_back_and_creates_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "ci" / "cache" / "history.json"
    assert write_history(str(path), {"t::b": [0.25], "t::a": [1.0, 2.0]}) is None
    assert read_history(str(path)).durations == {"t::a": [1.0, 2.0], "t::b": [0.25]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(path.parent) == ["history.json"]


def test_a_failed_write_leaves_the_old_history_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.json"
    path.write_text(ours({"t::a": [1.0]}))
    before = path.read_text()

    def dies_halfway(document: object, out: TextIO, **kwargs: object) -> None:
        out.write('{"format": "pytest-expiry-history", "tests": {"t::a": [')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(json, "dump", dies_halfway)  # the json module history.py writes with
    problem = write_history(str(path), {"t::a": [1.0, 2.0]})
    assert problem is not None
    assert f"cannot write the deadline history {path}: " in problem
    assert "No space left on device" in problem
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["history.json"]


def test_a_history_that_cannot_be_written_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    problem = write_history(str(blocker / "history.json"), {"t": [1.0]})
    assert problem is not None and "cannot write the deadline history" in problem


# --- option values -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["-1", "0.5", "0.999", "1001", "nan", "inf", "abc", ""])
def test_a_learning_factor_below_1_or_too_large_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as error:
        learn_factor(text)
    assert f"{text!r} is not a factor from 1 to 1000" in str(error.value)
    assert "0 turns learning off" in str(error.value)


def test_a_learning_factor_is_0_or_from_1_to_1000() -> None:
    assert [learn_factor(t) for t in ("0", "1", "10", "1000")] == [0, 1, 10, 1000]


@pytest.mark.parametrize("text", ["0", "-5", "0.0001", "1e8", "nan", "abc"])
def test_a_floor_outside_the_deadline_limits_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as error:
        learn_min(text)
    assert f"{text!r} is not a number of seconds from 0.001 to 10000000" in str(error.value)


def test_a_floor_is_a_number_of_seconds() -> None:
    assert [learn_min(t) for t in ("0.001", "0.5", "5")] == [0.001, 0.5, 5]
