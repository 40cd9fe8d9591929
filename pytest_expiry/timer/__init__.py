"""Deadlines for worker processes, in the shape of ``torch.distributed.elastic.timer``.

Usable without pytest::

    queue = multiprocessing.get_context("spawn").Queue()
    server = LocalTimerServer(queue, max_interval=0.05)
    server.start()
    # in a worker process:
    configure(LocalTimerClient(queue))
    with expires(after=1):
        work()          # the worker is SIGKILLed if this takes longer than 1 s
    server.stop()
"""

from typing import Any

from pytest_expiry.timer.api import (
    RequestQueue,
    TimerClient,
    TimerRequest,
    TimerServer,
    clock,
    configure,
    expires,
)

_LOCAL = ("LocalTimerClient", "LocalTimerServer", "MultiprocessingRequestQueue")


def __getattr__(name: str) -> Any:
    # the multiprocessing flavour is imported on first use: the pytest plugin never needs it
    if name in _LOCAL:
        from pytest_expiry.timer import local  # noqa: PLC0415

        return getattr(local, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LocalTimerClient",
    "LocalTimerServer",
    "MultiprocessingRequestQueue",
    "RequestQueue",
    "TimerClient",
    "TimerRequest",
    "TimerServer",
    "clock",
    "configure",
    "expires",
]
