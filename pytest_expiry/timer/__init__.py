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

from pytest_expiry.timer.api import (
    RequestQueue,
    TimerClient,
    TimerRequest,
    TimerServer,
    clock,
    configure,
    expires,
)
from pytest_expiry.timer.local import (
    LocalTimerClient,
    LocalTimerServer,
    MultiprocessingRequestQueue,
)

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
