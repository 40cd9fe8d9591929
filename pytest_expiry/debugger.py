"""Whether a debugger is stepping through this process: no deadline runs out meanwhile."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["debugger_active"]

_DEBUGGER_MODULES = ("bdb", "pdb", "pydevd", "_pydevd", "debugpy", "pudb", "IPython.core.debugger")
_MONITORING: Any = getattr(sys, "monitoring", None)  # Python 3.12+: debuggers may use it


def debugger_active() -> bool:
    """True while pdb (or pydevd, debugpy, pudb...) is tracing this process."""
    tracer: Any = sys.gettrace()
    monitoring = _MONITORING
    if tracer is None and monitoring is None:
        return False  # the per-test fast path
    owner = getattr(tracer, "__self__", tracer)
    module = type(owner).__module__ if owner is not None else ""
    if module.startswith(_DEBUGGER_MODULES):
        return True
    return monitoring is not None and monitoring.get_tool(monitoring.DEBUGGER_ID) is not None
