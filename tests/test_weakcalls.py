"""Callbacks held weakly: after a fork, and after a delay (``pytest_expiry.weakcalls``)."""

from __future__ import annotations

import os
import threading
import types

import pytest

from pytest_expiry import weakcalls


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.called = threading.Event()

    def record(self, *args: object) -> None:
        self.calls.append(args)
        self.called.set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_the_callbacks_of_live_objects_only() -> None:
    read_end, write_end = os.pipe()
    alive, dead = Recorder(), Recorder()
    weakcalls.after_fork_in_child(lambda: None)  # a lambda dies at once: never called
    weakcalls.after_fork_in_child(alive.record)
    weakcalls.after_fork_in_child(dead.record)
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


def test_a_callback_is_called_later_in_a_daemon_thread() -> None:
    recorder = Recorder()
    weakcalls.call_later(0.05, recorder.record, 1, "two", name="expiry-test-later")
    (thread,) = [t for t in threading.enumerate() if t.name == "expiry-test-later"]
    assert thread.daemon
    assert recorder.called.wait(5)
    assert recorder.calls == [(1, "two")]


def test_a_callback_that_died_meanwhile_is_not_called() -> None:
    recorder = Recorder()
    weakcalls.call_later(0.05, recorder.record, name="expiry-test-dead")
    (thread,) = [t for t in threading.enumerate() if t.name == "expiry-test-dead"]
    calls = recorder.calls
    del recorder
    thread.join(5)
    assert not thread.is_alive() and calls == []


def test_the_module_holds_nothing_of_typing() -> None:
    """What a daemon thread's frame or an at-fork handler reaches stays alive until the end of
    the interpreter's exit; holding an object of ``typing`` made that exit slower."""
    held = {
        name: value
        for name, value in vars(weakcalls).items()
        if not name.startswith("__") and not isinstance(value, (types.ModuleType, bool))
    }
    of_typing = {
        name
        for name, value in held.items()
        if "typing" in (type(value).__module__, getattr(value, "__module__", None))
    }
    assert held and not of_typing
