"""The exception a test sees when its deadline passes."""

from __future__ import annotations


class Expired(BaseException):
    """Raised in a test's main thread, at the point where it hangs, when its deadline passes.

    It derives from BaseException, like pytest's own outcomes, so that an ``except Exception``
    in the code under test does not swallow it.
    """


Expired.__module__ = "pytest_expiry"  # reports name it by its public path
