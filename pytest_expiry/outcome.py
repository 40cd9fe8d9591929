"""What a scope makes of a phase's report: the expiry's record and failure (with the
watchdog's account), a test that ended past its deadline, a SLOW notice.

Called by :class:`~pytest_expiry.scoping.ScopeHooks` from ``pytest_runtest_makereport``
(and for a module's import), after the :class:`~pytest_expiry.scope.ScopeGuard` has
answered the watchdog, so nothing here races the hard kill.
"""

from __future__ import annotations

import pytest

from pytest_expiry import record as records
from pytest_expiry.clock import clock
from pytest_expiry.errors import find_expiry
from pytest_expiry.labels import name_xdist_worker
from pytest_expiry.learning import deadline_source
from pytest_expiry.record import Record, after_text
from pytest_expiry.report.carry import add_record, attach, where_it_hung
from pytest_expiry.scope import ActiveScope, ScopeGuard
from pytest_expiry.settings import Settings

__all__ = ["account", "complete_expiry", "ended_late", "note_if_slow"]

_ACCOUNT_MARGIN = 2.0  # beyond the grace period, for the watchdog's account to arrive


def account(guard: ScopeGuard, scope: ActiveScope, phase: str, settings: Settings) -> Record:
    """The record of ``scope``'s expiry in ``phase``, with the watchdog's account of it
    (processes, signals, stacks) when that arrives in time."""
    told = guard.await_account(scope, settings.grace + _ACCOUNT_MARGIN)
    record = records.expired(scope.nodeid, phase, scope.seconds, scope.expired_after, told)
    record.update(deadline_source(scope.owner, scope.seconds, settings))
    return record


def complete_expiry(
    record: Record,
    scope: ActiveScope,
    call: pytest.CallInfo[None],
    report: pytest.TestReport,
    item: pytest.Item,
) -> None:
    """Complete the report of the phase ``scope`` expired in with its ``record`` (on the
    report, in its section and JUnit), failing it if the test swallowed the ``Expired``."""
    record["hung_at"] = where_it_hung(call.excinfo)
    worker_id = getattr(item.config, "workerinput", {}).get("workerid")
    if worker_id:
        name_xdist_worker(record, worker_id)
    expired = find_expiry(call.excinfo.value) if call.excinfo is not None else None
    if expired is not None and expired.pending_tasks:
        record["tasks"] = expired.pending_tasks
    if expired is None:
        report.outcome = "failed"
        report.longrepr = (
            f"expired in {call.when} {after_text(record['elapsed'], scope.seconds)}, "
            "and the test swallowed the Expired exception"
        )
    attach(report, record)
    item.user_properties.append(report.user_properties[-1])  # JUnit reads the item's


def ended_late(scope: ActiveScope, report: pytest.TestReport, settings: Settings) -> bool:
    """A test that ended after its deadline, before the watchdog's interrupt reached it
    (while its stacks were gathered), expired all the same: its teardown report fails.
    Returns whether it did."""
    now = clock()
    if now <= scope.deadline:
        return False
    elapsed = now - scope.armed_at
    record = records.ended_late(scope.nodeid, scope.seconds, elapsed)
    record.update(deadline_source(scope.owner, scope.seconds, settings))
    report.outcome = "failed"
    report.longrepr = (
        f"pytest_expiry.Expired: ended after {elapsed:.2f} s, "
        f"{now - scope.deadline:.3f} s past its deadline (deadline {round(scope.seconds, 3):g} s)"
    )
    add_record(report, record)
    return True


def note_if_slow(
    nodeid: str, seconds: float, elapsed: float, report: pytest.TestReport, share: float
) -> None:
    """A SLOW record on ``report`` if the test took ``share`` of its ``seconds`` or more
    (and did not expire)."""
    if elapsed >= share * seconds and not getattr(report, "expiry", None):
        add_record(report, records.slow(nodeid, report.when, seconds, elapsed))
