"""The exception a test sees when its deadline passes."""

from __future__ import annotations

import doctest

from pytest_expiry._compat import PytestFailure

__all__ = ["Expired", "is_expiry"]


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


Expired.__module__ = "pytest_expiry"  # reports name it by its public path


def is_expiry(error: BaseException | None) -> bool:
    """Whether ``error`` is an :class:`Expired`, was raised while handling one (``raise
    RuntimeError(...) from expired``, or an exception raised in an ``except`` block), or
    wraps one as doctest's ``UnexpectedException`` does (its ``exc_info``)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Expired):
            return True
        seen.add(id(error))
        wrapped = getattr(error, "exc_info", None)
        if isinstance(error, doctest.UnexpectedException) and wrapped:
            error = wrapped[1]
        else:
            error = error.__cause__ or error.__context__
    return False
