"""The watchdog's event log (``events.jsonl``) is read while the watchdog appends to it: a
reader sees every complete event, and an account still being written neither hides the
events before it nor is taken half-written.

Found by CI: the xdist controller saw a worker die just as the watchdog appended the account
of its hard kill. The torn last line made the whole log unreadable, the ``killing`` before
it went unseen, and the expiry was reported as "worker crashed"."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_expiry.protocol.accounts import await_account
from pytest_expiry.watchdog import launch
from pytest_expiry.xdist import accounts
from pytest_expiry.xdist.controller import XdistBridge

if TYPE_CHECKING:
    from pytest_expiry.session import ExpirySession

KILLING = {"event": "killing", "nodeid": "t.py::x", "pid": 4242}
ACCOUNT = {
    "event": "expired",
    "nodeid": "t.py::x",
    "deadline_at": 12.5,
    "hard_killed": True,
    "processes": [{"pid": 4242, "stack": "File 'x.py', line 1 in f\n" * 400}],
}


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event) + "\n").encode()


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where gw1's own watchdog would keep its log (and where a watchdog's session reads it)."""
    monkeypatch.setattr(accounts, "base", lambda: str(tmp_path / "base"))
    path = tmp_path / "base" / (accounts.prefix("nonce", "gw1") + "abc")
    path.mkdir(parents=True)
    return path


@pytest.fixture
def torn_log(directory: Path) -> Iterator[Path]:
    """A log holding the killing and the first half of its account; the rest of the account
    is appended 0.2 s later, from another thread (as the watchdog would)."""
    path = directory / "events.jsonl"
    account = _line(ACCOUNT)
    path.write_bytes(_line(KILLING) + account[: len(account) // 2])

    def finish() -> None:
        time.sleep(0.2)
        with open(path, "ab") as log:
            log.write(account[len(account) // 2 :])

    writer = threading.Thread(target=finish)
    writer.start()
    yield path
    writer.join()


def test_every_complete_event_is_read_and_a_torn_last_line_is_left(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(_line(KILLING) + _line(ACCOUNT)[:100])
    assert accounts.read_events(str(path)) == [KILLING]


def test_a_line_that_is_not_an_event_is_skipped_and_the_rest_still_count(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"[1, 2]\n" + b"not json\n" + _line(ACCOUNT))
    assert accounts.read_events(str(path)) == [ACCOUNT]


def test_a_missing_log_has_no_events(tmp_path: Path) -> None:
    assert accounts.read_events(str(tmp_path / "events.jsonl")) == []


def test_the_controller_waits_for_an_account_it_caught_being_written(
    torn_log: Path, directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's death is seen while its account is appended: the controller sees the
    killing and waits for the account (a reader that dropped the whole log returned None at
    once, and xdist's "worker crashed" stood)."""
    monkeypatch.setattr(launch, "_open_pidfd", lambda pid: None)  # the handle watches nobody
    watchdog = launch.WatchdogProcess(str(directory), os.getpid(), stop_fd=-1)
    bridge = XdistBridge(cast("ExpirySession", SimpleNamespace(watchdog=watchdog)))
    assert bridge._hard_kill_event("t.py::x") == ACCOUNT


def test_a_worker_watchdogs_account_is_collected_once_it_is_whole(torn_log: Path) -> None:
    assert accounts.collect(accounts.prefix("nonce", "gw1"), "t.py::x", 5.0) == ACCOUNT


def test_a_test_process_without_its_channel_reads_the_account_once_it_is_whole(
    torn_log: Path,
) -> None:
    event = await_account(None, str(torn_log), ("t.py::x",), 12.5, timeout=5.0)
    assert event == ACCOUNT
