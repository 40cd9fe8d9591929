"""pytest-xdist: ``controller`` (the controller's hooks: the watchdog shared with workers on
its host, a killed worker's crash turned into an expiry failure), ``worker`` (a worker's side:
the controller's watchdog, or its own), ``hosts`` (whether a worker shares its controller's
host), ``placement`` (which workers run their own watchdog, and where), ``accounts`` (a
worker's own watchdog's account of a hard kill, read by the controller on that host)."""

__all__ = ["WORKER_KEY"]

WORKER_KEY = "expiry_watchdog"
"""The key of ``workerinput`` under which the controller tells a worker which watchdog guards
it (here, not in ``controller``: a worker reads it and needs nothing else of that side)."""
