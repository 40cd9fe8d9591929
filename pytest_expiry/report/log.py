"""Every record of the session, gathered where the reports arrive (plain pytest, or the
xdist controller), for the terminal summary and the JSON report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

    from pytest_expiry.record import Record

__all__ = ["ExpiryLog"]


class ExpiryLog:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def add_report(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        """Keep the report's records; those of an attempt that pytest-rerunfailures runs
        again (outcome ``rerun``) say so (``run_again``)."""
        carried: list[Record] = getattr(report, "expiry", None) or []
        if getattr(report, "outcome", "") == "rerun":
            attempt = int(getattr(report, "rerun", 0)) + 1  # a hard kill's record has none
            carried = [{"attempt": attempt, **r, "run_again": True} for r in carried]
        self.records.extend(carried)

    def add_exit_blockers(self, worker: str, threads: list[dict[str, Any]]) -> None:
        from pytest_expiry.record import exit_blocked  # noqa: PLC0415 - rare path

        self.records.append(exit_blocked(worker, threads))

    def of_kind(self, *kinds: str) -> list[Record]:
        return [r for r in self.records if r["event"] in kinds]
