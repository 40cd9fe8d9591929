"""The exception a test sees when its deadline passes."""

from __future__ import annotations

import sys
from typing import Any

from pytest_expiry._compat import PytestFailure

__all__ = ["Expired", "find_expiry", "is_expiry"]


class Expired(PytestFailure):
    """Raised in a test's main thread, at the point where it hangs, when its deadline passes.

    It is one of pytest's own outcomes (a subclass of ``pytest.fail.Exception``), so pytest's
    fixture machinery treats it as it treats ``pytest.fail``: a class-scoped fixture that
    expires in setup is an error of each test that uses it, and a finalizer that expires does
    not stop the other finalizers. Like every outcome it derives from BaseException, so an
    ``except Exception`` in the code under test does not swallow it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, pytrace=True)
        self.pending_tasks: list[dict[str, Any]] = []
        """For an async test: its event loop's pending tasks (:mod:`pytest_expiry.looptasks`)."""


Expired.__module__ = "pytest_expiry"  # reports name it by its public path


def find_expiry(error: BaseException | None) -> Expired | None:
    """The :class:`Expired` that ``error`` is, was raised while handling (``raise
    RuntimeError(...) from expired``, or an exception raised in an ``except`` block), holds
    (an exception group, as a trio nursery or an anyio task group raises), or wraps as
    doctest's ``UnexpectedException`` does (its ``exc_info``); None if there is none."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        if isinstance(error, Expired):
            return error
        seen.add(id(error))
        wrapped = getattr(error, "exc_info", None)
        doctest = sys.modules.get("doctest")  # only a doctest raises it; importing costs 6 ms
        if doctest is not None and isinstance(error, doctest.UnexpectedException) and wrapped:
            pending.append(wrapped[1])
            continue
        pending.extend(getattr(error, "exceptions", None) or ())  # an exception group
        pending.append(error.__cause__ or error.__context__)
    return None


def is_expiry(error: BaseException | None) -> bool:
    """Whether ``error`` is or carries an :class:`Expired` (see :func:`find_expiry`)."""
    return find_expiry(error) is not None
