"""What an event loop's tasks wait on, for the report of an async test that expired.

A suspended coroutine is in no thread's stack, so the stacks the watchdog gathers show the
loop's scheduler and nothing of the test. Taken inside the loop (just before the expiry is
raised in the test's task), this lists every pending task with its await chain: the
suspended frames from the task's coroutine down to the innermost ``await``, each as
``file:line in function``. The task the expiry is raised in (the test's) comes first.

Each task is a JSON-ready dict: ``{"name", "coroutine", "frames": [{"file", "line",
"function"}], "hung": bool}``, frames outermost first.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["asyncio_tasks", "describe_tasks", "trio_tasks"]

_LIMIT = 50  # tasks listed; a loop with thousands says how many were left out


def _frame(frame: FrameType, line: int | None = None) -> dict[str, Any]:
    code = frame.f_code
    return {
        "file": code.co_filename,
        "line": line if line is not None else frame.f_lineno,
        "function": getattr(code, "co_qualname", code.co_name),
    }


def _await_chain(coroutine: Any) -> Iterator[FrameType]:
    """The frames of ``coroutine`` and of what it awaits, outermost first (a plain future at
    the end has no frame)."""
    seen: set[int] = set()
    while coroutine is not None and id(coroutine) not in seen:
        seen.add(id(coroutine))
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        frame = frame or getattr(coroutine, "gi_frame", None)
        if frame is not None:
            yield frame
        awaited = getattr(coroutine, "cr_await", None)
        if awaited is None:
            awaited = getattr(coroutine, "ag_await", None)
        if awaited is None:
            awaited = getattr(coroutine, "gi_yieldfrom", None)
        coroutine = awaited


def _entry(name: str, coroutine: Any, frames: list[dict[str, Any]], hung: bool) -> dict[str, Any]:
    qualname = getattr(coroutine, "__qualname__", type(coroutine).__name__)
    return {"name": name, "coroutine": f"{qualname}()", "frames": frames, "hung": hung}


def _hung_first(tasks: list[dict[str, Any]], test_file: str) -> list[dict[str, Any]]:
    """The task the expiry is raised in, then those running the test file's code."""
    tasks.sort(key=lambda task: (not task["hung"], not _in_file(task["frames"], test_file)))
    return tasks[:_LIMIT]


def asyncio_tasks(tasks: set[Any], hung: Any, test_file: str) -> list[dict[str, Any]]:
    """Every task of ``tasks`` that has not finished: ``hung`` (the one the expiry is raised
    in) first, then those in ``test_file``."""
    listed = []
    for task in tasks:
        if task.done():
            continue
        coroutine = task.get_coro()
        frames = [_frame(frame) for frame in _await_chain(coroutine)]
        listed.append(_entry(task.get_name(), coroutine, frames, task is hung))
    return _hung_first(listed, test_file)


def trio_tasks(test_file: str) -> list[dict[str, Any]]:
    """Every task of the current trio run: its main task (which the expiry is raised in)
    first, then those in ``test_file``. Called from inside the run (``run_sync_soon``)."""
    import trio  # noqa: PLC0415 - imported by the test already

    from pytest_expiry import _compat  # noqa: PLC0415 - the watchdog imports this module

    main = _compat.trio_main_task()
    listed = [
        _entry(
            task.name,
            task.coro,
            [_frame(f, line) for f, line in task.iter_await_frames()],
            task is main,
        )
        for task in _walk(trio.lowlevel.current_root_task())
        if not _is_trio_system_task(task.name)
    ]
    return _hung_first(listed, test_file)


def _is_trio_system_task(name: str) -> bool:
    """trio's own tasks (``<init>``, ``<TrioToken.run_sync_soon task>``): never the test's."""
    return name.startswith("<") and name.endswith(">")


def _in_file(frames: list[dict[str, Any]], test_file: str) -> bool:
    return bool(test_file) and any(frame["file"] == test_file for frame in frames)


def _walk(task: Any) -> Iterator[Any]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _walk(child)


def describe_tasks(tasks: list[dict[str, Any]]) -> str:
    """The report's text for ``tasks``: one block per task, frames most recent call first
    like the stacks above it."""
    blocks = []
    for task in tasks:
        marker = "  <- Expired raised here" if task["hung"] else ""
        lines = [f"Task {task['name']!r} running {task['coroutine']}{marker}:"]
        lines += [
            f'  File "{frame["file"]}", line {frame["line"]} in {frame["function"]}'
            for frame in reversed(task["frames"])
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
