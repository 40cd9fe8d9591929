"""Every use of something pytest or pytest-xdist does not promise to keep, in one place.

Each name here has a test in ``tests/test_compat.py`` that fails loudly when the internal it
relies on changes (run it against pre-releases: ``pip install --pre pytest pytest-xdist trio``).
One private use lives elsewhere, because it must run before any other module of ours is
imported: ``plugin._skip_assertion_rewriting`` (pytest's rewrite hook's record of packages to
rewrite); it is tested here too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

__all__ = [
    "PytestFailure",
    "capture_disabled",
    "collection_errors_tolerated",
    "end_progress_line",
    "is_idle_pool_worker",
    "mark_done_in_xdist_queue",
    "pool_workers_may_run",
    "raise_in_waiting_asyncio_task",
    "raise_in_waiting_trio_task",
    "reports_logged_live",
    "runs_pool_worker",
    "runtest_phase",
    "trio_main_task",
]

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


def end_progress_line(reporter: Any) -> None:
    """End the terminal reporter's line of progress letters, if one is open, so that the next
    ``write_line`` starts a line of its own. Under xdist the letters leave ``currentfspath``
    unset, so ``ensure_newline`` alone does not see them (the writer's private width does)."""
    reporter.ensure_newline()
    if reporter._tw.width_of_current_line:
        reporter._tw.line()


def mark_done_in_xdist_queue(sched: Any, nodeid: str) -> bool:
    """Keep xdist's loadscope/loadfile schedulers from queueing ``nodeid`` again (their
    private ``workqueue``: scope -> {nodeid: done}). True if it was found there."""
    found = False
    for work_unit in getattr(sched, "workqueue", {}).values():
        if nodeid in work_unit:
            work_unit[nodeid] = True
            found = True
    return found


def raise_in_waiting_trio_task(error: BaseException) -> bool:
    """Inside a trio run (a ``run_sync_soon`` callback): make the run's main task raise
    ``error`` at the checkpoint where it is blocked, as trio delivers ``KeyboardInterrupt``
    (``Runner.main_task`` and ``Task._attempt_abort``, private). A task blocked in a nursery
    gets it the same way: added to the nursery's errors, its children cancelled. False if the
    main task is not blocked now."""
    task = trio_main_task()
    if task is None or task._abort_func is None:
        return False

    def raise_error() -> None:
        __tracebackhide__ = True
        raise error

    task._attempt_abort(raise_error)
    return True


def trio_main_task() -> Any:
    """The task running the function given to ``trio.run`` (``Runner.main_task``, private),
    from inside the run; None before it starts."""
    from trio._core._run import GLOBAL_RUN_CONTEXT  # noqa: PLC0415

    return GLOBAL_RUN_CONTEXT.runner.main_task


def raise_in_waiting_asyncio_task(task: Any, error: BaseException) -> bool:
    """In ``task``'s loop: make ``task`` raise ``error`` at the ``await`` where it waits, by
    making ``error`` the outcome of the future it waits on (``Task._fut_waiter``, private);
    a task waiting on another task passes it on to the one that waits. False if ``task`` is
    not waiting on a future now."""
    waiter = getattr(task, "_fut_waiter", None)
    while waiter is not None and hasattr(waiter, "get_coro"):  # a task awaiting a task
        waiter = getattr(waiter, "_fut_waiter", None)
    if waiter is None or waiter.done():
        return False
    waiter.set_exception(error)
    return True


def runs_pool_worker(thread: Any) -> bool:
    """Whether ``thread`` runs a ``concurrent.futures`` thread pool's worker loop: its
    target (``Thread._target``, private, kept until the target returns) is the pool's
    private ``_worker``. False until that module is imported."""
    pool = sys.modules.get("concurrent.futures.thread")
    worker = getattr(pool, "_worker", None)
    return worker is not None and getattr(thread, "_target", None) is worker


def pool_workers_may_run() -> bool:
    """Whether a ``concurrent.futures`` thread pool's worker may be alive: the pool module's
    private registry of its workers (``_threads_queues``, weakly keyed by thread) is not
    empty. False until that module is imported; True when the registry is not there (the
    caller then looks at every thread)."""
    pool = sys.modules.get("concurrent.futures.thread")
    if pool is None:
        return False
    registry = getattr(pool, "_threads_queues", None)
    return registry is None or len(registry) > 0


def is_idle_pool_worker(frame: Any) -> bool:
    """Whether ``frame`` (a thread's innermost) is a ``concurrent.futures`` worker waiting for
    its next job with none queued: inside the pool's private ``_worker`` loop (not in a job it
    runs), whose ``work_queue`` is empty."""
    if frame is None:
        return False
    code = frame.f_code
    if code.co_name != "_worker" or not code.co_filename.replace("\\", "/").endswith(
        "concurrent/futures/thread.py"
    ):
        return False
    queue = frame.f_locals.get("work_queue")
    return queue is None or not queue.qsize()


def runtest_phase(frame: Any, item: object) -> str | None:
    """The phase of ``item`` ("setup", "call" or "teardown") that pytest's runner is inside at
    ``frame`` (a signal handler's: the main thread's innermost), or None when it is between
    phases (making or logging a report, or not running ``item``). Read from the runner's
    private frames: ``CallInfo.from_call(func, when)`` with ``func`` running, called by
    ``call_and_report`` whose local ``item`` is ``item`` (a nested in-process session's item
    is another)."""
    from _pytest.runner import CallInfo  # noqa: PLC0415 - the rare path

    from_call = vars(CallInfo)["from_call"].__func__.__code__  # a classmethod's function
    callee = None
    while frame is not None:
        if frame.f_code is from_call and callee is not None:
            local = frame.f_locals
            caller = frame.f_back
            running = callee.f_code is getattr(local.get("func"), "__code__", None)
            if running and caller is not None and caller.f_locals.get("item") is item:
                when = local.get("when")
                return when if isinstance(when, str) else None
        callee, frame = frame, frame.f_back
    return None


@contextlib.contextmanager
def collection_errors_tolerated(config: pytest.Config) -> Iterator[None]:
    """Inside, the session runs its tests despite collection errors, as with
    ``--continue-on-collection-errors`` (whose option ``dest`` this sets)."""
    option = config.option
    previous = option.continue_on_collection_errors
    option.continue_on_collection_errors = True
    try:
        yield
    finally:
        option.continue_on_collection_errors = previous


def reports_logged_live(manager: pytest.PytestPluginManager) -> bool:
    """Whether every test report is logged as soon as it is made: when no implementation of
    ``pytest_runtest_protocol`` that may run the test in its place is there but pytest's own
    (the builtin plugin ``runner``, which logs each phase's report before the next phase) and
    ours. pytest-rerunfailures, for one, runs an attempt's phases with ``log=False`` and logs
    their reports after its teardown."""
    impls = manager.hook.pytest_runtest_protocol.get_hookimpls()
    return all(
        impl.wrapper
        or impl.hookwrapper
        or impl.plugin_name == "runner"
        or impl.plugin_name.startswith("expiry-")
        for impl in impls
    )
