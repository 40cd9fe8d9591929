"""The clock every deadline is measured on.

``time.monotonic``: every process of a host shares it, and it does not jump with the wall
clock. A module of its own, so that the test process reads the clock without importing the
timer package (:mod:`pytest_expiry.timer`, which re-exports it), which only the watchdog
needs.
"""

from __future__ import annotations

import time

__all__ = ["clock"]

clock = time.monotonic
