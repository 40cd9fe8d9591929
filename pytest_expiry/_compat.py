"""Every use of something pytest or pytest-xdist does not promise to keep, in one place.

Each name here has a test in ``tests/test_compat.py`` that fails loudly when the internal it
relies on changes (run it against pre-releases: ``pip install --pre pytest pytest-xdist``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

__all__ = ["PytestFailure", "capture_disabled", "mark_done_in_xdist_queue"]

if TYPE_CHECKING:
    from _pytest.outcomes import Failed as PytestFailure
else:
    PytestFailure = pytest.fail.Exception  # public: the class pytest.fail raises


def capture_disabled(config: pytest.Config) -> Any:
    """A context manager under which pytest captures nothing (the capture manager's
    ``global_and_fixture_disabled``, private), or a no-op one without a capture manager."""
    import contextlib  # noqa: PLC0415

    capture: Any = config.pluginmanager.get_plugin("capturemanager")
    method = getattr(capture, "global_and_fixture_disabled", None)
    return method() if method is not None else contextlib.nullcontext()


def mark_done_in_xdist_queue(sched: Any, nodeid: str) -> bool:
    """Keep xdist's loadscope/loadfile schedulers from queueing ``nodeid`` again (their
    private ``workqueue``: scope -> {nodeid: done}). True if it was found there."""
    found = False
    for work_unit in getattr(sched, "workqueue", {}).values():
        if nodeid in work_unit:
            work_unit[nodeid] = True
            found = True
    return found
