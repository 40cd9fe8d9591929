"""Callbacks a forked child runs, held weakly (``pytest_expiry.forks``)."""

from __future__ import annotations

import os
import types

import pytest

from pytest_expiry import forks


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def record(self, *args: object) -> None:
        self.calls.append(args)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_callbacks_of_live_objects_only() -> None:
    read_end, write_end = os.pipe()
    alive, dead = Recorder(), Recorder()
    forks.after_fork_in_child(lambda: None)  # a lambda dies at once: never called
    forks.after_fork_in_child(alive.record)
    forks.after_fork_in_child(dead.record)
    del dead
    pid = os.fork()
    if pid == 0:  # the child: its Recorder was called by the at-fork handler
        os.write(write_end, b"called" if alive.calls == [()] else b"not called")
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    said = os.read(read_end, 64)
    os.close(read_end)
    assert said == b"called" and os.waitstatus_to_exitcode(status) == 0
    assert alive.calls == []  # the parent's is untouched


def test_the_module_holds_nothing_of_typing() -> None:
    """What an at-fork handler reaches stays alive until the end of the interpreter's exit;
    holding an object of ``typing`` made that exit slower."""
    held = {
        name: value
        for name, value in vars(forks).items()
        if not name.startswith("__") and not isinstance(value, (types.ModuleType, bool))
    }
    of_typing = {
        name
        for name, value in held.items()
        if "typing" in (type(value).__module__, getattr(value, "__module__", None))
    }
    assert held and not of_typing
