"""Whether a debugger is stepping through this process: no deadline runs out meanwhile."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["debugger_active"]

_DEBUGGER_MODULES = ("bdb", "pdb", "pydevd", "_pydevd", "debugpy", "pudb", "IPython.core.debugger")
_MONITORING: Any = getattr(sys, "monitoring", None)  # Python 3.12+: debuggers may use it
_DEBUGGER_ID = getattr(_MONITORING, "DEBUGGER_ID", 0)


def debugger_active() -> bool:
    """True while pdb (or pydevd, debugpy, pudb...) is tracing this process."""
    tracer: Any = sys.gettrace()
    if tracer is not None:
        owner = getattr(tracer, "__self__", tracer)
        if type(owner).__module__.startswith(_DEBUGGER_MODULES):
            return True
    return _MONITORING is not None and _MONITORING.get_tool(_DEBUGGER_ID) is not None
