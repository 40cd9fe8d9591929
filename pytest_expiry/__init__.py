"""pytest-expiry: per-test deadlines enforced by a watchdog process.

This module stays light: every Python process started under an expiry scope imports
``pytest_expiry.stackhook`` (and so this file) at start-up.
"""

from pytest_expiry.errors import Expired

__all__ = ["Expired"]
__version__ = "0.1.0"
