"""Hooks pytest-expiry offers to other plugins and conftest files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_expiry.record import Record


@pytest.hookspec
def pytest_expiry_expired(item: pytest.Item, record: Record) -> None:
    """Called in the process that ran ``item`` after its deadline passed and the watchdog
    finished with it.

    ``record`` (a :class:`pytest_expiry.record.Record`) is what also goes to the JSON
    report: ``nodeid``, ``phase``, ``deadline`` (seconds), ``deadline_source``
    (``learned``, ``marker``, ``option``, ``env``, ``ini``, ``session`` or ``collect``;
    with ``learned``, a learned deadline's numbers), ``elapsed``, ``pids``, ``signals``
    (pid -> signal names) and ``stacks`` (pid -> text).
    """
