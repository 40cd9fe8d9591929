"""Which watchdog an xdist worker uses, what the controller says about it, and where a
worker's own watchdog keeps the account of a hard kill (the parts that need no second host;
tests/e2e/test_remote_workers.py runs them across stand-in hosts)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import execnet
import pytest

from pytest_expiry.protocol.wire import EVENTS_NAME
from pytest_expiry.timer.api import clock
from pytest_expiry.xdist import accounts, hosts
from pytest_expiry.xdist.placement import placement_line
from pytest_expiry.xdist.worker import session_budget


def _card(directory: Path, session: float = 0.0) -> dict[str, Any]:
    return hosts.controller_card(str(directory), "62,61", clock() + 100.0, session)


def test_a_worker_that_sees_the_controllers_directory_shares_it_and_says_so(
    tmp_path: Path,
) -> None:
    card = _card(tmp_path)
    assert not hosts.shares(str(tmp_path), "gw0")
    assert hosts.join_shared(card, "gw0")
    assert hosts.shares(str(tmp_path), "gw0")
    assert _card(tmp_path)["nonce"] == card["nonce"], "one nonce per session"


@pytest.mark.parametrize(
    "change",
    [
        {"host": "another-boot-id"},
        {"inode": -1},  # a directory of the same name, e.g. in a private /tmp
        {"nonce": "not-this-session"},
        {"directory": "/nonexistent/pytest-expiry-x"},
    ],
    ids=["other-boot", "other-directory", "other-nonce", "missing"],
)
def test_a_worker_that_cannot_be_sure_runs_its_own(tmp_path: Path, change: dict[str, Any]) -> None:
    card = {**_card(tmp_path), **change}
    assert not hosts.join_shared(card, "gw0")
    assert not hosts.shares(str(tmp_path), "gw0")


def test_a_worker_on_another_host_counts_the_budget_from_the_seconds_left(
    tmp_path: Path,
) -> None:
    card = {**_card(tmp_path, session=60.0), "deadline": 1e12}  # another host's clock
    assert 99.0 < card["remaining"] <= 100.0
    own = session_budget(60.0, card, shared=False)
    assert own is not None and 99.0 < own.left() <= 100.0
    shared = session_budget(60.0, card, shared=True)
    assert shared is not None and shared.deadline == 1e12
    assert session_budget(0.0, card, shared=False) is None


def test_the_placement_line_names_the_hosts_with_their_own_watchdog() -> None:
    local = ("this host", False)
    assert placement_line([local, local]) is None, "nothing new for local workers"
    line = placement_line([local, local, ("host2", True)])
    assert line == "expiry: 3 workers on 2 hosts; own watchdog on host2"
    line = placement_line([("a:1", True), ("b:2", True)])
    assert line == "expiry: 2 workers on 2 hosts; own watchdog on a:1, b:2"


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ("ssh=me@host2//python=python3", "me@host2"),
        ("socket=10.0.0.5:8888", "10.0.0.5:8888"),
        ("popen//python=docker exec box python", "python=docker exec box python"),
    ],
)
def test_a_remote_host_is_named_by_its_spec(spec: str, label: str) -> None:
    assert hosts.host_label(execnet.XSpec(spec)) == label


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "base"
    monkeypatch.setattr(accounts, "base", lambda: str(directory))
    return directory


def _watchdog_dir(base: Path, events: list[dict[str, Any]], worker: str = "gw1") -> Path:
    directory = base / (accounts.prefix("nonce", worker) + "abc")
    directory.mkdir(parents=True)
    lines = "".join(json.dumps(event) + "\n" for event in events)
    (directory / "events.jsonl").write_text(lines)
    return directory


def test_the_account_of_a_hard_kill_is_found_and_marked_collected(base: Path) -> None:
    event = {"event": "expired", "nodeid": "t.py::x", "hard_killed": True}
    other = _watchdog_dir(base, [{"event": "killing", "nodeid": "t.py::x"}], worker="gw2")
    mine = _watchdog_dir(base, [{"event": "killing", "nodeid": "t.py::x"}, event])
    assert accounts.collect(accounts.prefix("nonce", "gw1"), "t.py::x", 5.0) == event
    assert (mine / accounts.COLLECTED).exists()
    assert not (other / accounts.COLLECTED).exists(), "another worker's is not touched"


def test_a_crash_the_watchdog_did_not_cause_is_known_at_once(base: Path) -> None:
    _watchdog_dir(base, [{"event": "expired", "nodeid": "t.py::x", "hard_killed": False}])
    start = time.monotonic()
    assert accounts.collect(accounts.prefix("nonce", "gw1"), "t.py::x", 5.0) is None
    assert accounts.collect(accounts.prefix("nonce", "gw9"), "t.py::x", 5.0) is None
    assert time.monotonic() - start < 1.0, "no waiting without a killing logged"


def test_a_killing_without_its_outcome_is_waited_for_a_bounded_time(base: Path) -> None:
    _watchdog_dir(base, [{"event": "killing", "nodeid": "t.py::x"}])
    start = time.monotonic()
    assert accounts.collect(accounts.prefix("nonce", "gw1"), "t.py::x", 0.2) is None
    assert time.monotonic() - start >= 0.2


def test_the_base_directory_must_be_this_users_alone(base: Path) -> None:
    assert accounts.private_base() == str(base)
    assert (base.stat().st_mode & 0o777) == 0o700
    os.chmod(base, 0o755)
    with pytest.raises(OSError, match="not a private directory"):
        accounts.private_base()


def test_the_accounts_module_names_the_events_file_as_the_channel_does() -> None:
    assert accounts._EVENTS == EVENTS_NAME
