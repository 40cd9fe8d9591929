"""pytest-expiry: per-test deadlines enforced by a watchdog process.

Processes started by tests never import this package: the start-up hook
(``pytest-expiry.pth``) is self-contained.
"""

from pytest_expiry.errors import Expired

__all__ = ["Expired"]
__version__ = "0.1.0"
