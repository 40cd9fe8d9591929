"""What pytest-expiry's per-test work costs, measured inside one session (a pytest plugin).

Comparing two sessions' wall clock cannot resolve a few microseconds a test on a shared
machine: two runs of the same code differ by more. Here every other test runs with the
plugin's per-test parts (the scope, leak detection, the session's record; see
``pytest_expiry.pertest``) and the tests between without them, in the same process, so
drift and load hit both halves alike. The median protocol time of each half is compared.

    python -m pytest -p no:cacheprovider -q -p pertest_ab --expiry=30 SUITE
    (with bench/ on PYTHONPATH; PERTEST_AB_OUT=FILE appends the line to FILE)

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


class PerTestAB:
    def __init__(self) -> None:
        self.times: tuple[list[int], list[int]] = ([], [])  # without, with
        self.parts: tuple[Any, Any, Any] | None = None
        self.count = 0

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        per_test: Any = item.config.pluginmanager.get_plugin("expiry-per-test")
        if per_test is not None and self.parts is None:
            self.parts = (per_test.scopes, per_test.leaks, per_test.session)
        self.count += 1
        with_parts = self.count % 2
        if per_test is not None and self.parts is not None:
            chosen = self.parts if with_parts else (None, None, None)
            per_test.scopes, per_test.leaks, per_test.session = chosen
        start = time.perf_counter_ns()
        try:
            return (yield)
        finally:
            self.times[with_parts].append(time.perf_counter_ns() - start)

    def pytest_unconfigure(self) -> None:
        without, with_parts = (statistics.median(t[_WARM_UP:] or [0]) / 1e3 for t in self.times)
        line = (
            f"per-test parts: {with_parts - without:+.2f} us a test "
            f"(median protocol {with_parts:.1f} us with, {without:.1f} us without, "
            f"{len(self.times[1])} tests each)\n"
        )
        out = os.environ.get("PERTEST_AB_OUT")
        if out:
            with open(out, "a") as written:
                written.write(line)
        else:
            print(line, end="")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(PerTestAB(), "pertest-ab")
