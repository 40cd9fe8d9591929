"""A doctest that expires fails at the example that hung, as doctest failures do.

The interrupt raises :class:`~pytest_expiry.errors.Expired` in the example's code; pytest's
doctest runner lets it through as an outcome, and its traceback then runs through pytest's
and doctest's machinery down to our signal handler, with no line of the doctest shown. Before
the report is made, the failure becomes doctest's own "unexpected exception" at that
example: the doctest's source up to the example, then the exception raised there.
"""

from __future__ import annotations

import doctest
from types import TracebackType
from typing import Any

import pytest

from pytest_expiry.errors import Expired

__all__ = ["point_at_the_hung_example"]


def point_at_the_hung_example(item: pytest.Item, call: pytest.CallInfo[Any]) -> None:
    """If ``item`` is a doctest whose ``call`` raised ``Expired`` inside one of its examples,
    replace ``call.excinfo`` with doctest's ``UnexpectedException`` for that example, its
    traceback cut at the example's line (which :func:`~pytest_expiry.errors.is_expiry`
    still recognises as an expiry)."""
    test: doctest.DocTest | None = getattr(item, "dtest", None)
    excinfo = call.excinfo
    if test is None or excinfo is None or not isinstance(excinfo.value, Expired):
        return
    found = _example_frame(test, excinfo.tb)
    if found is None:
        return
    index, entry = found
    entry.tb_next = None  # what lies below the example's line is our signal handler
    error = excinfo.value.with_traceback(entry)
    unexpected = doctest.UnexpectedException(test, test.examples[index], (Expired, error, entry))
    try:
        raise unexpected from None
    except doctest.UnexpectedException:
        call.excinfo = pytest.ExceptionInfo.from_current()


def _example_frame(
    test: doctest.DocTest, tb: TracebackType | None
) -> tuple[int, TracebackType] | None:
    """The index of the innermost example on the traceback, and its traceback entry; doctest
    compiles example ``i`` of test ``name`` as the file ``<doctest name[i]>``."""
    prefix = f"<doctest {test.name}["
    found: tuple[int, TracebackType] | None = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(prefix) and filename.endswith("]>"):
            index = filename[len(prefix) : -2]
            if index.isdigit() and int(index) < len(test.examples):
                found = (int(index), tb)
        tb = tb.tb_next
    return found
