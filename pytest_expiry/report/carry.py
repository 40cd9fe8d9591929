"""How records ride on pytest's reports: ``report.expiry``, a list (a teardown can both leak
and expire), which reaches the xdist controller with the report like any other attribute;
with each record, its JUnit property and, for a failure, its text as a section."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry.errors import find_expiry

if TYPE_CHECKING:
    from pytest_expiry.record import Record

__all__ = ["add_record", "attach", "report_marker_errors", "where_it_hung"]


def add_record(report: pytest.TestReport | pytest.CollectReport, record: Record) -> None:
    """Put ``record`` on ``report`` (``report.expiry``), with its JUnit property."""
    from pytest_expiry.report.junit import junit_property  # noqa: PLC0415 - rare path

    report.expiry = [*(getattr(report, "expiry", None) or []), record]  # type: ignore[union-attr]
    prop = junit_property(record)
    if prop is not None:
        getattr(report, "user_properties", []).append(prop)


def attach(report: pytest.TestReport | pytest.CollectReport, record: Record) -> None:
    """:func:`add_record`, and an expiry's text as the ``expiry`` section of the failure
    (a leak's text is a section of the report instead: see
    :class:`~pytest_expiry.leaks.plugin.LeakCheck`)."""
    from pytest_expiry.report.terminal import describe  # noqa: PLC0415 - rare path

    text = describe(record)
    add_section = getattr(report.longrepr, "addsection", None)
    if add_section is not None:
        add_section("expiry", text)
    else:
        report.sections.append(("expiry", text))
    add_record(report, record)


def where_it_hung(excinfo: pytest.ExceptionInfo[BaseException] | None) -> dict[str, Any] | None:
    """The frame the expiry was raised in, as ``{"file", "line", "function"}``: the innermost
    entry of its traceback that pytest would show (our own frames hide themselves). None
    when the failure carries no expiry (the test swallowed it and failed otherwise)."""
    expired = find_expiry(excinfo.value) if excinfo is not None else None
    if expired is None or expired.__traceback__ is None:
        return None
    own = pytest.ExceptionInfo.from_exception(expired)
    shown = own.traceback.filter(own)
    if not shown:
        return None
    entry = shown[-1]
    return {"file": str(entry.path), "line": entry.lineno + 1, "function": entry.name}


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
