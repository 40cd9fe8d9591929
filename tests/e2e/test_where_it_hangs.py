"""The report says where a test really hangs (issue #13): async tests at their own ``await``
with the pending tasks of their loop, every process with a label, and a JSON record that
says when and at which line.

The async tests need the compatibility extras (``pip install '.[test,compat]'``, the
compatibility job of ``.ci/run``); where those are not installed they are skipped.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest

try:
    from tests.helpers import Run, RunPytest, needs
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import Run, RunPytest, needs  # type: ignore[no-redef,import-not-found]


def expiry_events(
    pytester: pytest.Pytester, name: str = "report.json"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    document = json.loads((pytester.path / name).read_text())
    return [event for event in document["events"] if event["event"] == "expired"], document


def failure_text(run: Run, name: str) -> str:
    failure = run.testcase(name).find("failure")
    assert failure is not None, run.output
    return failure.text or ""


# --- async tests fail at their own await ------------------------------------------------

GATHER = """
import asyncio
import pytest


@pytest.mark.asyncio
async def test_one_task_of_a_gather_hangs():
    async def quick():
        await asyncio.sleep(0)

    async def stuck():
        await asyncio.Event().wait()

    await asyncio.gather(quick(), stuck())
"""


@needs("pytest_asyncio")
def test_an_asyncio_gather_fails_at_its_await_and_lists_the_pending_tasks(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_gather=GATHER)
    run = run_pytest(
        "--expiry=0.5",
        "--expiry-report=report.json",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    run.result.assert_outcomes(failed=1)
    run.result.stdout.re_match_lines(
        [
            r">\s+await asyncio.gather\(quick\(\), stuck\(\)\)",
            r"E\s+pytest_expiry.Expired: .*",
            r"test_gather.py:13: Expired",
        ]
    )
    (event,), _ = expiry_events(pytester)
    assert event["hung_at"]["line"] == 13 and event["hung_at"]["file"].endswith("test_gather.py")
    hung, *others = event["tasks"]
    assert hung["hung"] and hung["coroutine"] == "test_one_task_of_a_gather_hangs()"
    assert hung["frames"][-1]["line"] == 13
    stuck = [task for task in others if "stuck" in task["coroutine"]]
    assert len(stuck) == 1 and not stuck[0]["hung"]
    assert [frame["function"] for frame in stuck[0]["frames"]][-1] == "Event.wait"
    assert not any("quick" in task["coroutine"] for task in others)  # it had ended
    text = failure_text(run, "test_one_task_of_a_gather_hangs")
    assert "--- pending tasks of the test's event loop, most recent call first ---" in text
    assert "<- Expired raised here" in text


TRIO_NURSERY = """
import trio


def test_a_nursery_child_hangs():
    async def main():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever, name="sleeper")
            await trio.sleep_forever()

    trio.run(main)
"""


@needs("trio")
def test_a_trio_nursery_expires_as_an_expiry_and_lists_its_tasks(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The Expired arrives wrapped in the nursery's exception group: still an expiry, never
    "the test swallowed the Expired exception"."""
    pytester.makepyfile(test_nursery=TRIO_NURSERY)
    run = run_pytest("--expiry=0.5", "--expiry-report=report.json")
    run.result.assert_outcomes(failed=1)
    assert "swallowed" not in run.output
    (event,), _ = expiry_events(pytester)
    assert event["hung_at"]["function"] == "main"
    assert event["hung_at"]["file"].endswith("test_nursery.py")
    names = [task["name"] for task in event["tasks"]]
    assert names[0].endswith("main") and event["tasks"][0]["hung"]
    assert names[1:] == ["sleeper"]  # trio's own tasks are not listed
    run.result.stdout.re_match_lines([r"\s+\| pytest_expiry.Expired: still running in call"])
    text = failure_text(run, "test_a_nursery_child_hangs")
    assert 'test_nursery.py", line 8, in main\n    |     await trio.sleep_forever()\n' in text


ANYIO_GROUP = """
import anyio
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


async def test_a_task_group_child_hangs():
    async with anyio.create_task_group() as group:
        group.start_soon(anyio.sleep_forever)
        await anyio.sleep_forever()
"""


@needs("anyio")
@needs("trio")
def test_an_anyio_task_group_expires_on_both_backends_with_its_tasks(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_group=ANYIO_GROUP)
    run = run_pytest("--expiry=0.5", "--expiry-report=report.json", "-p", "anyio")
    run.result.assert_outcomes(failed=2)
    assert "swallowed" not in run.output
    events, _ = expiry_events(pytester)
    assert sorted(event["nodeid"].split("[")[1] for event in events) == ["asyncio]", "trio]"]
    for event in events:
        assert event["hung_at"]["line"] == 15, event["hung_at"]
        assert event["tasks"][0]["hung"] and len(event["tasks"]) >= 2, event["tasks"]


# --- every process has a label ----------------------------------------------------------

CHILDREN = """
import concurrent.futures
import multiprocessing
import subprocess
import sys
import time


def _wait():
    time.sleep(3600)


def test_starts_one_of_each_and_hangs():
    for method in ("fork", "spawn", "forkserver"):
        multiprocessing.get_context(method).Process(target=_wait, daemon=True).start()
    # not multiprocessing.Pool: a worker killed while it waits for work holds the pool's
    # queue lock, and the pool's finalizer then waits for that lock for ever (CPython's)
    pool = concurrent.futures.ProcessPoolExecutor(1, multiprocessing.get_context("spawn"))
    pool.submit(time.sleep, 0).result(timeout=60)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    time.sleep(3600)
"""


def test_each_process_of_an_expiry_is_labelled_by_what_started_it(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_children=CHILDREN)
    run = run_pytest("--expiry=8", "--expiry-grace=0.3", "--expiry-report=report.json")
    run.result.assert_outcomes(failed=1)
    (event,), _ = expiry_events(pytester)
    labels = [process["label"] for process in event["processes"]]
    assert labels[0] == "test process"
    for label in (
        "multiprocessing child (fork)",
        "multiprocessing child (spawn)",
        "multiprocessing child (forkserver)",
        "ProcessPoolExecutor worker (spawn)",
        "subprocess",
    ):
        assert label in labels, labels
    assert not any("fork server" in label for label in labels)  # shared: never the hang
    text = failure_text(run, "test_starts_one_of_each_and_hangs")
    assert "(multiprocessing child (spawn)), most recent call first" in text


def test_under_xdist_the_test_process_is_labelled_by_its_worker(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("import time\ndef test_hangs():\n    time.sleep(3600)\n")
    run = run_pytest("-n", "1", "--expiry=0.5", "--expiry-report=report.json")
    run.result.assert_outcomes(failed=1)
    (event,), _ = expiry_events(pytester)
    assert event["processes"][0]["label"] == "xdist worker gw0"
    assert "xdist worker gw0  signals:" in run.output
    assert "--- stacks of pid" in run.output and "(xdist worker gw0), most recent" in run.output


def test_a_hard_killed_xdist_worker_is_labelled_too(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("def test_holds_the_gil():\n    sum(range(10**15))\n")
    run = run_pytest("-n", "1", "--expiry=0.5", "--expiry-grace=0.3", "--expiry-report=report.json")
    assert "HARD-KILLED" in run.output, run.output
    document = json.loads((pytester.path / "report.json").read_text())
    (event,) = [e for e in document["events"] if e["event"] == "hard_killed"]
    assert event["processes"][0]["label"] == "xdist worker gw0"


# --- the JSON record: when, where, and how many were slow ----------------------------------

SLOW_AND_HUNG = """
import subprocess
import time


def test_slow():
    time.sleep(0.6)


def test_quick():
    pass


def test_hangs():
    time.sleep(3600)


def test_leaves_a_child():
    subprocess.Popen(["sleep", "3600"])
"""


def test_each_json_event_says_when_it_happened_and_where_it_hung(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(test_mixed=SLOW_AND_HUNG)
    before = datetime.datetime.now(datetime.timezone.utc)
    run = run_pytest(
        "--expiry=1", "--expiry-slow=0.3", "--expiry-leaks=kill", "--expiry-report=report.json"
    )
    after = datetime.datetime.now(datetime.timezone.utc)
    run.result.assert_outcomes(failed=1, passed=3)
    (expired,), document = expiry_events(pytester)
    assert expired["hung_at"] == {
        "file": str(pytester.path / "test_mixed.py"),
        "line": 14,
        "function": "test_hangs",
    }
    assert sorted(e["event"] for e in document["events"]) == ["expired", "leaked", "slow"]
    for event in document["events"]:
        moment = datetime.datetime.fromisoformat(event["at"])
        assert moment.tzinfo is not None and before <= moment <= after, event
    slow_lines = re.findall(r"^SLOW \S+: ", run.result.stdout.str(), re.MULTILINE)
    assert document["slow"] == 1
    assert slow_lines == ["SLOW test_mixed.py::test_slow: "] * 2  # its line, then the summary
