"""Where the per-test microseconds of pytest-expiry go, without pytest around them.

Run with the bench's virtualenv (``bench/run.py`` does, for its ``hotpath`` section)::

    bench/.work/venv/bin/python bench/hotpath.py [--tests 3000] [--gap-us 300]

Drives :class:`pytest_expiry.guard.Guard` (arm + release: the two writes to the scope slot
that a test costs) and the per-test leak check against a real watchdog process, with
``--gap-us`` of busy work between tests (a trivial test takes about 300 µs of pytest's own
time), and reports per test, as JSON on stdout: the test process's CPU, the watchdog's CPU,
the wall time added, and how often the test process was preempted. Variants take parts away
to show what each costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import psutil
from procstat import cpu_seconds

from pytest_expiry.channel import ChannelClient, ChannelError
from pytest_expiry.guard import Guard
from pytest_expiry.leaks import LeakWatch, supported
from pytest_expiry.signals import default_signals

try:  # where the pytest side's handle on the watchdog lives depends on the version
    from pytest_expiry.launcher import WatchdogProcess
except ImportError:
    from pytest_expiry.watchdog import WatchdogProcess  # type: ignore[attr-defined,no-redef]

NODEID = "tests/test_module.py::test_a_function_with_a_name[and-a-parameter]"


class _NullChannel:
    """Takes the writes and does nothing: what is left is the guard's Python."""

    def arm(self, *args: object) -> None:
        pass

    def disarm(self) -> None:
        pass

    def check_alive(self) -> None:
        pass

    def wake(self) -> None:
        pass

    def close(self) -> None:
        pass


def _connect(process: Any) -> ChannelClient:
    """The test process's channel, addressed as this version of the plugin does it (by the
    watchdog's directory, or by its socket's path)."""
    try:
        return ChannelClient(process.directory)
    except ChannelError:
        return ChannelClient(process.socket_path)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _measure(
    step: Callable[[], None] | None, tests: int, gap: float, watchdog: psutil.Process
) -> dict[str, float]:
    me = psutil.Process()
    before_wd = cpu_seconds(watchdog)
    before_cs = me.num_ctx_switches()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(tests):
        if step is not None:
            step()
        _spin(gap)
    cpu1, wall1 = time.process_time(), time.perf_counter()
    after_cs = me.num_ctx_switches()
    time.sleep(0.05)  # let the watchdog finish what it was sent
    watchdog_cpu = cpu_seconds(watchdog) - before_wd
    return {
        "client_cpu": (cpu1 - cpu0) / tests,
        "watchdog_cpu": watchdog_cpu / tests,
        "wall": (wall1 - wall0) / tests,
        "preempted": (after_cs.involuntary - before_cs.involuntary) / tests,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests", type=int, default=3000)
    parser.add_argument("--gap-us", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args()
    gap = options.gap_us / 1e6
    signals = default_signals()
    process = WatchdogProcess.launch(2.0, signals)
    try:
        channel = _connect(process)
        watchdog = psutil.Process(process.process.pid)
        guard = Guard(channel, signals.interrupt, 0.5)
        null_guard = Guard(_NullChannel(), signals.interrupt, 0.5)  # type: ignore[arg-type]

        def real() -> None:
            guard.arm(NODEID, 60.0)
            guard.release()

        def python_only() -> None:
            null_guard.arm(NODEID, 60.0)
            null_guard.release()

        leaks = LeakWatch("kill", 1.0) if supported() else None

        def real_with_leak_check() -> None:
            guard.arm(NODEID, 60.0)
            guard.release()
            if leaks is not None:
                leaks.check(NODEID)

        variants: dict[str, tuple[Callable[[], None] | None, float]] = {
            "nothing (the gap alone)": (None, gap),
            "Guard.arm + release, real watchdog": (real, gap),
            "Guard.arm + release + leak check, real watchdog": (real_with_leak_check, gap),
            "Guard.arm + release, no channel (Python only)": (python_only, gap),
            "Guard.arm + release back to back, no gap": (real, 0.0),
        }
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        time.sleep(0.5)  # the watchdog's start-up is not the hot path
        for _ in range(options.repeats):
            for name, (step, variant_gap) in variants.items():
                runs[name].append(_measure(step, options.tests, variant_gap, watchdog))
        guard.release()
        channel.close()
    finally:
        process.stop()
    baseline = {
        k: statistics.median(r[k] for r in runs["nothing (the gap alone)"])
        for k in ("client_cpu", "wall")
    }
    result: dict[str, Any] = {"tests": options.tests, "gap_us": options.gap_us, "variants": {}}
    for name, samples in runs.items():
        median = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
        if variants[name][1]:  # the gap's own cost is taken away from the variants with one
            median["client_cpu"] -= baseline["client_cpu"]
            median["wall"] -= baseline["wall"]
        result["variants"][name] = median
    print(json.dumps(result))


if __name__ == "__main__":
    main()
