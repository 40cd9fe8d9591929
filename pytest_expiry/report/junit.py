"""JUnit's view of the records: one ``<property>`` of the test case for each record, whose
name says the kind and whose value says what happened (pytest's junitxml writes the item's
``user_properties``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_expiry.record import Record

__all__ = ["junit_property"]


def junit_property(record: Record) -> tuple[str, str] | None:
    """``(name, value)`` of ``record``'s JUnit property; None for kinds JUnit does not show
    (SLOW, tests not run, which pytest reports as skipped with the reason)."""
    kind = record["event"]
    if kind == "hard_killed":
        return "expiry", f"hard-killed after {record['elapsed']:.2f} s"
    if kind == "expired" and record.get("late"):
        return "expiry", f"ended after its deadline ({record['elapsed']:.2f} s)"
    if kind == "expired":
        return "expiry", f"expired in {record['phase']} after {record['elapsed']:.2f} s"
    if kind == "leaked":
        return "expiry_leaked", " ".join(map(str, record["pids"]))
    if kind == "leaked_thread":
        return "expiry_leaked_threads", " ".join(repr(t["name"]) for t in record["threads"])
    return None
