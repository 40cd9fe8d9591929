"""Waiting for the watchdog's account of an expiry: the event it sends the test process
over the channel's stream socket, or, when the test closed that socket, the same event in the
session's event log (``events.jsonl``, which the watchdog writes first)."""

from __future__ import annotations

import time
from typing import Any

from pytest_expiry.clock import clock
from pytest_expiry.protocol.client import ChannelClient

__all__ = ["await_account"]


def await_account(
    channel: ChannelClient | None,
    events_path: str,
    nodeids: tuple[str, ...],
    deadline_at: float,
    timeout: float,
) -> dict[str, Any] | None:
    """The account of the expiry of the scope named one of ``nodeids`` whose deadline was
    ``deadline_at`` (the accounts of other escalations, answered without an exception, are
    skipped); None if it does not come within ``timeout`` seconds."""
    end = clock() + timeout
    while (left := end - clock()) > 0:
        if channel is None or not channel.connected:
            return _logged(events_path, nodeids, deadline_at, end)
        event = channel.receive_event(left)
        if event is not None and _matches(event, nodeids, deadline_at):
            return event
    return None


def _logged(
    events_path: str, nodeids: tuple[str, ...], deadline_at: float, end: float
) -> dict[str, Any] | None:
    from pytest_expiry.xdist.accounts import read_events  # noqa: PLC0415 - the rare path

    pause = 0.005
    while clock() < end:
        for event in read_events(events_path):
            if _matches(event, nodeids, deadline_at):
                return event
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    return None


def _matches(event: dict[str, Any], nodeids: tuple[str, ...], deadline_at: float) -> bool:
    return event.get("deadline_at") == deadline_at and event.get("nodeid") in nodeids
