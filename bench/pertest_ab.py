"""What pytest-expiry's per-test work costs, measured inside one session (a pytest plugin).

Comparing two sessions' wall clock cannot resolve a few microseconds a test on a shared
machine: two runs of the same code differ by more. Here every other test runs with the
plugin's per-test parts (the scope, leak detection, the session's record; see
``pytest_expiry.pertest``) and the tests between without them, in the same process, so
drift and load hit both halves alike. A test's time runs from the start of its protocol to
the start of the next test's, so the parts' work falls inside it whichever wrapper pluggy
calls first. The medians of the halves are compared (their means are not: a garbage
collection that falls in one half moves its mean by more than the parts cost).

    python -m pytest -p no:cacheprovider -q -p pertest_ab --expiry=30 SUITE
    (with bench/ on PYTHONPATH; PERTEST_AB_OUT=FILE appends the line to FILE;
    PERTEST_AB_PARTS=leaks toggles leak detection alone, the other parts staying on in
    both halves: any of scopes, leaks, session, comma-separated; all three by default)

What it cannot see: pluggy's dispatch to the plugin (both halves pay it), start-up, and the
work done once per item at collection. Those are the bench's rows (``run.py``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Generator
from typing import Any

import pytest

_WARM_UP = 50  # tests per half left out: imports, first reads
_PARTS = ("scopes", "leaks", "session")
_TOGGLED = pytest.StashKey[list[str]]()


class PerTestAB:
    def __init__(self, toggled: list[str]) -> None:
        self.toggled = toggled
        self.times: tuple[list[int], list[int]] = ([], [])  # without, with
        self.parts: dict[str, Any] | None = None
        self.count = 0
        self.started = 0

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        self._lap(time.perf_counter_ns())
        per_test: Any = item.config.pluginmanager.get_plugin("expiry-per-test")
        self.count += 1
        if per_test is not None:
            if self.parts is None:
                self.parts = {name: getattr(per_test, name) for name in self.toggled}
            for name, part in self.parts.items():
                setattr(per_test, name, part if self.count % 2 else None)
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self) -> Generator[None, object, object]:
        try:
            return (yield)
        finally:
            self._lap(time.perf_counter_ns())  # the last test's

    def _lap(self, now: int) -> None:
        if self.started:
            self.times[self.count % 2].append(now - self.started)
        self.started = now

    def pytest_unconfigure(self) -> None:
        without, with_parts = (t[_WARM_UP:] or [0] for t in self.times)
        medians = [statistics.median(t) / 1e3 for t in (with_parts, without)]
        line = (
            f"per-test parts ({','.join(self.toggled)}): {medians[0] - medians[1]:+.2f} us a test "
            f"(median {medians[0]:.1f} us with, {medians[1]:.1f} us without, "
            f"{len(self.times[1])} tests each)\n"
        )
        out = os.environ.get("PERTEST_AB_OUT")
        if out:
            with open(out, "a") as written:
                written.write(line)
        else:
            print(line, end="")


def pytest_configure(config: pytest.Config) -> None:
    toggled = os.environ.get("PERTEST_AB_PARTS", ",".join(_PARTS)).split(",")
    unknown = sorted(set(toggled) - set(_PARTS))
    if unknown:
        raise pytest.UsageError(
            f"PERTEST_AB_PARTS names {', '.join(unknown)}: use any of {', '.join(_PARTS)}"
        )
    config.stash[_TOGGLED] = toggled


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Registered last, the wrapper is the outermost of the protocol's first-called ones, so
    that the parts it chooses for a test are in place before pytest-expiry's own wrapper
    begins that test (which otherwise would begin it with the previous test's choice)."""
    manager = session.config.pluginmanager
    ab = PerTestAB(session.config.stash[_TOGGLED])
    manager.register(ab, "pertest-ab")
    outermost = manager.hook.pytest_runtest_protocol.get_hookimpls()[-1].plugin
    if outermost is not ab:
        raise pytest.UsageError(f"pertest_ab: {outermost!r} wraps the protocol outside it")
