"""The xdist controller's view of where its workers' watchdogs are: the line that says
which workers run their own (:class:`Placement`), and reading the account of a hard kill on
a worker's own host (:func:`collect_on_host`)."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["Placement", "collect_on_host"]

_THIS_HOST = "this host"
_REMOTE_PATIENCE = 10.0


class Placement:
    """Which watchdog each worker uses, gathered as the workers come up; :meth:`add`
    returns the line to show once the last of the first workers is up, if any of them
    runs its own watchdog (a session whose workers all share the controller's shows
    nothing new). Replacement workers are not counted."""

    def __init__(self) -> None:
        self._expected = 0
        self._hosts: dict[str, tuple[str, bool]] | None = {}

    def expect(self, workers: int) -> None:
        self._expected = workers

    def add(self, worker: str, spec: Any, shared: bool) -> str | None:
        if self._hosts is None:
            return None
        from pytest_expiry.xdist.hosts import host_label  # noqa: PLC0415

        self._hosts[worker] = (_THIS_HOST, False) if shared else (host_label(spec), True)
        if len(self._hosts) < self._expected:
            return None
        hosts, self._hosts = self._hosts, None
        return placement_line(list(hosts.values()))


def placement_line(workers: list[tuple[str, bool]]) -> str | None:
    """``expiry: 3 workers on 2 hosts; own watchdog on host2`` from each worker's
    (host, runs its own watchdog); None if none runs its own."""
    own = list(dict.fromkeys(host for host, is_own in workers if is_own))
    if not own:
        return None
    hosts = len({host for host, _is_own in workers})
    count = len(workers)
    return (
        f"expiry: {count} worker{'s' * (count != 1)} on {hosts} host{'s' * (hosts != 1)}; "
        f"own watchdog on {', '.join(own)}"
    )


def collect_on_host(spec: Any, prefix: str, nodeid: str, wait: float) -> dict[str, Any] | None:
    """Run :func:`pytest_expiry.xdist.accounts.collect` on the host of a worker's ``--tx`` spec,
    through a gateway of its own (the worker's is gone with it). None when the host cannot
    be reached or has no account: xdist's crash report then stands."""
    import execnet  # noqa: PLC0415

    from pytest_expiry.xdist import accounts  # noqa: PLC0415

    group = execnet.Group()
    try:
        gateway = group.makegateway(copy.copy(spec))
        channel = gateway.remote_exec(accounts)
        channel.send((prefix, nodeid, wait))
        event = channel.receive(wait + _REMOTE_PATIENCE)
    except Exception:  # whatever went wrong there, xdist's report stands
        return None
    finally:
        group.terminate(timeout=1.0)
    return event if isinstance(event, dict) else None
