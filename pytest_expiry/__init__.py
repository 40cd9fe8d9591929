"""pytest-expiry: per-test deadlines enforced by a watchdog process.

Processes started by tests never import this package: the start-up hook
(``pytest-expiry.pth``) is self-contained. Importing the package imports nothing but itself:
:class:`Expired` (which needs pytest) is loaded on first use, so that the watchdog process,
which runs ``python -m pytest_expiry.watchdog``, starts without pytest (100 ms of CPU).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_expiry.errors import Expired

__all__ = ["Expired"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Expired":
        from pytest_expiry.errors import Expired  # noqa: PLC0415

        return Expired
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
