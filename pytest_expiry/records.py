"""Expiry and leak records on pytest's reports: how they travel (``report.expiry``, a list,
which reaches the xdist controller with the report) and how they are shown on a failure."""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["add_record", "attach", "report_marker_errors"]


def report_marker_errors(session: pytest.Session, errors: dict[pytest.Item, str]) -> None:
    """A collection error for each module whose tests have invalid expiry markers."""
    by_module: dict[str, list[str]] = {}
    for item, message in errors.items():
        module = item.nodeid.split("::")[0]
        by_module.setdefault(module, []).append(message)
    for module, messages in by_module.items():
        longrepr = "invalid expiry markers:\n  " + "\n  ".join(messages)
        report = pytest.CollectReport(module, "failed", longrepr, [])
        session.ihook.pytest_collectreport(report=report)


def add_record(report: pytest.TestReport | pytest.CollectReport, record: dict[str, Any]) -> None:
    """Records travel on the report as ``report.expiry``, a list (a teardown can both leak
    and expire), so that they reach the xdist controller with it."""
    report.expiry = [*(getattr(report, "expiry", None) or []), record]  # type: ignore[union-attr]


def attach(report: pytest.TestReport | pytest.CollectReport, record: dict[str, Any]) -> None:
    """Put an expiry on a report: a section of the failure, a JUnit property, and the
    record itself (``report.expiry``), which travels to the xdist controller."""
    from pytest_expiry.report import describe_expiry  # noqa: PLC0415 - rare path

    text = describe_expiry(record)
    add_section = getattr(report.longrepr, "addsection", None)
    if add_section is not None:
        add_section("expiry", text)
    else:
        report.sections.append(("expiry", text))
    add_record(report, record)
    summary = f"expired in {record['phase']} after {record['elapsed']:.2f} s"
    getattr(report, "user_properties", []).append(("expiry", summary))
