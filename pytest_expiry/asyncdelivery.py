"""An expiry raised inside an async run rather than in its machinery.

The interrupt arrives in the main thread wherever it happens to be. When that is a task's own
code (a coroutine running, or a sync call it made), raising there is right: the exception is
the task's, and its framework handles it as any other. When the main thread is in the
machinery of an event loop instead (asyncio's or trio's scheduler waiting for I/O, or the host
loop of a trio guest run, which is how anyio's trio backend runs tests), raising there leaves
the test's task suspended: the failure points into the loop, and with anyio every later call
into the run (the async fixtures' teardown, the runner's exit) waits forever.

There the expiry is handed to the loop, which raises it in the test's task at the ``await``
where that task waits: the test fails at its own line and the loop stays usable.

* trio: in the run's main task, the way trio delivers ``KeyboardInterrupt``;
* asyncio: in the task whose await chain passes through the test's file, as the result of
  the future it waits on (the same wake-up a cancellation uses).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from pytest_expiry import _compat, looptasks

__all__ = ["deliver_into_loop", "end_at_the_await"]

_TASK_CODE = inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE
_TRIO_MACHINERY = (f"{os.sep}trio{os.sep}", f"{os.sep}anyio{os.sep}_backends{os.sep}_trio.py")
_ASYNCIO_MACHINERY = (f"{os.sep}asyncio{os.sep}", f"{os.sep}selectors.py")
_FRAMEWORKS = frozenset({"trio", "outcome", "anyio", "asyncio", "sniffio"})
_RETRIES = 100  # scheduler passes to wait for the main task to block again


def deliver_into_loop(error: BaseException, frame: FrameType | None, test_file: str) -> bool:
    """Hand ``error`` to the event loop whose machinery ``frame`` (the interrupted frame) is
    in, to be raised in the task of the test defined in ``test_file``. True if it was handed
    over: the caller must not raise it. False where it belongs here: no loop waits in this
    frame, or it is a task's own code, or no task of the test can be found."""
    machinery = _innermost_machinery(frame)
    if machinery == "trio":
        return _deliver_into_trio(error, test_file)
    if machinery == "asyncio":
        return _deliver_into_asyncio(error, test_file)
    return False


def _deliver_into_trio(error: BaseException, test_file: str) -> bool:
    import trio  # noqa: PLC0415 - imported by the test already

    try:
        token = trio.lowlevel.current_trio_token()
        token.run_sync_soon(_list_tasks_and_raise, error, test_file)
    except (RuntimeError, trio.RunFinishedError):
        return False
    return True


def _innermost_machinery(frame: FrameType | None) -> str | None:
    """Whose machinery the innermost frame that is a task's code or a loop's is in:
    ``"trio"``, ``"asyncio"``, or None (a task's own code, or no loop at all)."""
    while frame is not None:
        if frame.f_code.co_flags & _TASK_CODE:
            return None
        filename = frame.f_code.co_filename
        if "trio" in sys.modules and any(part in filename for part in _TRIO_MACHINERY):
            return "trio"
        if any(part in filename for part in _ASYNCIO_MACHINERY):
            return "asyncio"
        frame = frame.f_back
    return None


def _deliver_into_asyncio(error: BaseException, test_file: str) -> bool:
    import asyncio  # noqa: PLC0415 - imported by the loop already

    loop = asyncio._get_running_loop()
    if loop is None or not test_file:
        return False
    task = _task_of_the_test(asyncio.all_tasks(loop), test_file)
    if task is None:
        return False
    _note_tasks(error, lambda: looptasks.asyncio_tasks(asyncio.all_tasks(loop), task, test_file))
    loop.call_soon_threadsafe(_compat.raise_in_waiting_asyncio_task, task, error)
    return True


def _note_tasks(error: BaseException, listing: Callable[[], list[dict[str, Any]]]) -> None:
    """Put the loop's pending tasks on ``error`` (an :class:`~pytest_expiry.Expired`); a
    listing that fails (a framework's internals changed) leaves the report without it."""
    with contextlib.suppress(Exception):  # the expiry itself must still be delivered
        error.pending_tasks = listing()  # type: ignore[attr-defined]


def _list_tasks_and_raise(error: BaseException, test_file: str) -> None:
    """Run by trio (``run_sync_soon``): list the run's tasks, then raise ``error`` in its
    main task."""
    _note_tasks(error, lambda: looptasks.trio_tasks(test_file))
    _raise_in_main_task(error, 0)


def _task_of_the_test(tasks: set[Any], test_file: str) -> Any:
    """The task running the test: of those whose await chain has a frame in ``test_file``,
    one with a ``test*`` function in it (the test itself, not a helper task it started whose
    expiry would never reach it), by name where several do (``all_tasks`` has no order)."""
    ranked = []
    for task in tasks:
        names = _functions_in_file(task.get_coro(), test_file)
        if names:
            ranked.append((not any(n.startswith("test") for n in names), task.get_name(), task))
    return min(ranked, key=lambda entry: entry[:2])[2] if ranked else None


def _functions_in_file(awaited: Any, test_file: str) -> list[str]:
    names = []
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        if frame is not None and frame.f_code.co_filename == test_file:
            names.append(frame.f_code.co_name)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
    return names


def _raise_in_main_task(error: BaseException, tries: int) -> None:
    """Run by trio (``run_sync_soon``): raise ``error`` in the main task where it waits, or
    try again on a later pass while it is not waiting."""
    if _compat.raise_in_waiting_trio_task(error) or tries >= _RETRIES:
        return
    import trio  # noqa: PLC0415

    trio.lowlevel.current_trio_token().run_sync_soon(_raise_in_main_task, error, tries + 1)


def end_at_the_await(error: BaseException, test_file: str) -> None:
    """Cut ``error``'s traceback after its innermost frame in ``test_file`` when everything
    below that frame is an async framework's own code (``trio.sleep_forever`` down to
    ``outcome``'s ``unwrap``): the failure then ends at the test's ``await``, as an asyncio
    test's already does. A traceback that goes on into other code is left whole."""
    last_in_test = None
    entry = error.__traceback__
    while entry is not None:
        if entry.tb_frame.f_code.co_filename == test_file:
            last_in_test = entry
        elif last_in_test is not None and not _in_framework(entry.tb_frame):
            return
        entry = entry.tb_next
    if last_in_test is not None:
        last_in_test.tb_next = None


def _in_framework(frame: FrameType) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    return module.partition(".")[0] in _FRAMEWORKS or bool(frame.f_locals.get("__tracebackhide__"))
