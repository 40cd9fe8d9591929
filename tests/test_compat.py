"""Each private internal that ``pytest_expiry._compat`` relies on, checked against the
installed pytest, pytest-xdist and trio: these fail loudly when one of them changes (run them
against pre-releases with ``pip install --pre pytest pytest-xdist trio``)."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_expiry import _compat
from pytest_expiry.errors import Expired


def test_pytest_fail_raises_the_class_expired_derives_from() -> None:
    with pytest.raises(_compat.PytestFailure):
        pytest.fail("x")
    assert issubclass(Expired, _compat.PytestFailure)


def test_the_capture_manager_can_be_disabled(pytestconfig: pytest.Config) -> None:
    capture: Any = pytestconfig.pluginmanager.get_plugin("capturemanager")
    assert hasattr(capture, "global_and_fixture_disabled"), "pytest's capture manager changed"
    with _compat.capture_disabled(pytestconfig):
        pass


@pytest.mark.skipif(importlib.util.find_spec("xdist") is None, reason="needs pytest-xdist")
def test_an_open_line_of_progress_letters_is_ended(pytestconfig: pytest.Config) -> None:
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    assert reporter is not None
    with _compat.capture_disabled(pytestconfig):
        _compat.end_progress_line(reporter)  # this run's own letters so far
        reporter.write(".")  # a progress letter, as under xdist: no current file path
        assert reporter._tw.width_of_current_line == 1
        _compat.end_progress_line(reporter)
        assert reporter._tw.width_of_current_line == 0
        _compat.end_progress_line(reporter)  # nothing open: nothing written
        assert reporter._tw.width_of_current_line == 0


def test_xdist_schedulers_keep_a_workqueue_of_node_ids() -> None:
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415

    options = {"tx": ["2*popen"], "numprocesses": 2}
    config: Any = type("Config", (), {"getvalue": lambda self, name: options.get(name)})()
    scheduler = LoadScopeScheduling(config)
    assert isinstance(scheduler.workqueue, dict), "xdist's LoadScopeScheduling changed"
    scheduler.workqueue["t.py"] = {"t.py::a": False, "t.py::b": False}
    assert _compat.mark_done_in_xdist_queue(scheduler, "t.py::b")
    assert scheduler.workqueue["t.py"] == {"t.py::a": False, "t.py::b": True}
    assert not _compat.mark_done_in_xdist_queue(scheduler, "t.py::c")


def test_an_asyncio_task_raises_the_error_at_the_await_where_it_waits() -> None:
    async def waits() -> str:
        try:
            await asyncio.Event().wait()
        except Expired as error:
            return f"raised at the await: {error}"
        return "not raised"

    async def main() -> str:
        task = asyncio.ensure_future(waits())
        await asyncio.sleep(0)
        assert _compat.raise_in_waiting_asyncio_task(task, Expired("late"))
        return await task

    assert asyncio.run(main()) == "raised at the await: late"


def test_an_asyncio_task_awaiting_a_task_passes_the_error_to_the_waiting_one() -> None:
    async def inner() -> None:
        await asyncio.Event().wait()

    async def main() -> type[BaseException] | None:
        inner_task = asyncio.ensure_future(inner())
        outer = asyncio.ensure_future(asyncio.wait_for(inner_task, None))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert _compat.raise_in_waiting_asyncio_task(outer, Expired("late"))
        try:
            await outer
        except Expired:
            return Expired
        return None

    assert asyncio.run(main()) is Expired


def test_a_running_asyncio_task_is_left_alone() -> None:
    async def main() -> bool:
        return _compat.raise_in_waiting_asyncio_task(asyncio.current_task(), Expired("x"))

    assert asyncio.run(main()) is False


@pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="needs trio")
def test_the_trio_main_task_raises_the_error_at_the_checkpoint_where_it_waits() -> None:
    import trio  # noqa: PLC0415

    delivered: list[bool] = []

    async def main() -> str:
        token = trio.lowlevel.current_trio_token()
        token.run_sync_soon(
            lambda: delivered.append(_compat.raise_in_waiting_trio_task(Expired("late")))
        )
        try:
            await trio.sleep_forever()
        except Expired as error:
            return f"raised at the await: {error}"
        return "not raised"

    assert trio.run(main) == "raised at the await: late"
    assert delivered == [True]


def test_the_continue_on_collection_errors_option_is_an_option_attribute(
    pytestconfig: pytest.Config,
) -> None:
    assert isinstance(pytestconfig.option.continue_on_collection_errors, bool)
    before = pytestconfig.option.continue_on_collection_errors
    with _compat.collection_errors_tolerated(pytestconfig):
        assert pytestconfig.option.continue_on_collection_errors is True
    assert pytestconfig.option.continue_on_collection_errors is before


def test_the_rewrite_hook_keeps_a_set_of_packages_and_a_cache(
    pytestconfig: pytest.Config,
) -> None:
    """What plugin._skip_assertion_rewriting edits: the packages to rewrite (a set of names)
    and the cache of decisions (a dict)."""
    hook = getattr(pytestconfig.pluginmanager, "rewrite_hook", None)
    assert isinstance(getattr(hook, "_must_rewrite", None), set)
    assert isinstance(getattr(hook, "_marked_for_rewrite_cache", None), dict)


@pytest.fixture
def phases_seen(request: pytest.FixtureRequest) -> Iterator[list[str | None]]:
    """The phase ``runtest_phase`` reads in this fixture's setup and teardown."""
    seen = [_compat.runtest_phase(sys._getframe(), request.node)]
    yield seen
    seen.append(_compat.runtest_phase(sys._getframe(), request.node))
    assert seen == ["setup", "call", None, "teardown"]


def test_the_runner_s_frames_say_which_phase_of_which_item_runs(
    phases_seen: list[str | None], request: pytest.FixtureRequest
) -> None:
    phases_seen.append(_compat.runtest_phase(sys._getframe(), request.node))
    phases_seen.append(_compat.runtest_phase(sys._getframe(), object()))  # another item's


def test_no_phase_is_read_outside_the_runner(request: pytest.FixtureRequest) -> None:
    read: list[str | None] = []
    thread = threading.Thread(
        target=lambda: read.append(_compat.runtest_phase(sys._getframe(), request.node))
    )
    thread.start()
    thread.join()
    assert read == [None]  # another thread's stack has no runner frames
    assert _compat.runtest_phase(None, request.node) is None


def test_a_thread_pool_s_worker_threads_are_told_from_others() -> None:
    import concurrent.futures  # noqa: PLC0415

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: None).result()
        [worker] = [t for t in threading.enumerate() if _compat.runs_pool_worker(t)]
        assert worker.name.startswith("ThreadPoolExecutor")
        assert _compat.pool_workers_may_run()  # the pool module's registry of its workers
    assert not _compat.runs_pool_worker(threading.current_thread())


class _RunsTestsItself:
    """A plugin that runs a test in place of pytest's protocol, as pytest-rerunfailures does."""

    def pytest_runtest_protocol(self, item: pytest.Item) -> None:
        return None


def test_pytest_s_own_protocol_is_the_builtin_plugin_named_runner(
    pytestconfig: pytest.Config,
) -> None:
    manager = pytestconfig.pluginmanager
    impls = manager.hook.pytest_runtest_protocol.get_hookimpls()
    running = {i.plugin_name for i in impls if not (i.wrapper or i.hookwrapper)}
    assert "runner" in running
    others = running - {"runner"} - {n for n in running if n.startswith("expiry-")}
    assert _compat.reports_logged_live(manager) is (not others)  # rerunfailures is one
    manager.register(_RunsTestsItself(), "runs-tests-itself")
    try:
        assert not _compat.reports_logged_live(manager)
    finally:
        manager.unregister(name="runs-tests-itself")
