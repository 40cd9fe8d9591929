"""xdist workers on other hosts (``--tx socket=``, ``--tx ssh=``, containers) run a watchdog
of their own, and the controller reports their expiries as it does a local worker's.

A stand-in host is an execnet socket server in a mount namespace with a private ``/tmp``
(:mod:`tests.remote_hosts`): the controller's watchdog directory is not there, as on another
machine. A hang, a hard kill, a SLOW test and a leak on such a worker must reach the
controller's terminal, JUnit and JSON report as they do from a local worker; a hard-killed
worker's account is read on its host, through execnet, since the worker can send nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import pytest

try:
    from tests.helpers import TAG, RunPytest, inner_env
    from tests.remote_hosts import RemoteHost, hosts_unavailable, start_remote_host
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import TAG, RunPytest, inner_env  # type: ignore[no-redef,import-not-found]
    from remote_hosts import (  # type: ignore[no-redef,import-not-found]
        RemoteHost,
        hosts_unavailable,
        start_remote_host,
    )

pytestmark = pytest.mark.skipif(
    hosts_unavailable() is not None, reason=f"no stand-in hosts here: {hosts_unavailable()}"
)

TESTS = """
    import subprocess
    import sys
    import time

    import pytest

    def test_first():
        pass

    def test_hangs():
        time.sleep(60)

    def test_holds_the_gil():
        sum(range(10**15))

    def test_leaks_a_process():
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    @pytest.mark.expires(10)
    def test_is_slow():
        time.sleep(0.6)

    def test_last():
        pass
"""
DEADLINE, GRACE = "--expiry=1", "--expiry-grace=0.5"
StartHost = Callable[..., "RemoteHost"]


@pytest.fixture
def remote_hosts(run_pytest: RunPytest, pytester: pytest.Pytester) -> Iterator[StartHost]:
    """``remote_hosts()`` starts a stand-in host serving the pytester directory; all are
    ended after the test, before ``run_pytest`` checks that nothing was left running (the
    servers carry its tag)."""
    started: list[RemoteHost] = []

    def start(*options: str) -> RemoteHost:
        host = start_remote_host(pytester.path, inner_env(os.environ[TAG]), *options)
        started.append(host)
        return host

    yield start
    for host in started:
        host.close()


def _events(report: object) -> dict[str, dict[str, object]]:
    document = json.loads(report.read_text())  # type: ignore[attr-defined]
    return {f"{e['event']} {e['nodeid'].split('::')[-1]}": e for e in document["events"]}


def test_a_worker_on_another_host_has_its_hangs_kills_and_leaks_reported(
    pytester: pytest.Pytester, run_pytest: RunPytest, remote_hosts: StartHost
) -> None:
    host = remote_hosts()
    pytester.makepyfile(TESTS)
    report = pytester.path / "expiry.json"
    run = run_pytest(
        "--tx", host.spec, "--dist", "load", DEADLINE, GRACE, "--expiry-slow=0.05",
        "--expiry-leaks=kill", f"--expiry-report={report}",
    )  # fmt: skip
    run.result.assert_outcomes(failed=2, passed=4)  # the killed test is not run again
    assert f"expiry: 1 worker on 1 host; own watchdog on {host.address}" in run.output
    hang = run.testcase("test_hangs").find("failure")
    assert hang is not None and "Expired: still running in call" in hang.get("message", "")
    assert "in test_hangs" in (hang.text or ""), "the hung frame is in the failure text"
    killed = run.testcase("test_holds_the_gil").find("failure")
    assert killed is not None, "a hard kill is a <failure>, not xdist's crash <error>"
    assert "so worker gw0 was killed" in killed.get("message", "")
    assert "in test_holds_the_gil" in (killed.text or "")
    seconds = float(run.testcase("test_holds_the_gil").get("time", "nan"))
    assert seconds >= 1.0, "the real elapsed time, not the 0 of xdist's crash report"
    assert "crashed while running" not in run.output
    assert "SLOW test_" in run.output and "test_is_slow" in run.output
    assert "LEAKED" in run.output
    leak = run.testcase("test_leaks_a_process").find("properties/property[@name='expiry_leaked']")
    assert leak is not None, "the leak is a JUnit property"
    events = _events(report)
    assert {"expired test_hangs", "hard_killed test_holds_the_gil"} <= set(events)
    assert events["hard_killed test_holds_the_gil"]["stacks"]
    assert {"slow test_is_slow", "leaked test_leaks_a_process"} <= set(events)


def test_two_hosts_at_once_each_run_their_own_watchdog(
    pytester: pytest.Pytester, run_pytest: RunPytest, remote_hosts: StartHost
) -> None:
    """Each host gets two tests first (xdist's ``load``), one of which it has to kill: the
    two hard kills happen on two hosts at about the same time. (Not ``loadfile``: xdist's
    loadscope scheduler fails when two replacement workers start at once, KeyError in
    ``_reschedule``, with local workers too.)"""
    first, second = remote_hosts(), remote_hosts()
    pytester.makepyfile(
        """
        import time

        def test_holds_the_gil_1():
            sum(range(10**15))

        def test_hangs_1():
            time.sleep(60)

        def test_holds_the_gil_2():
            sum(range(10**15))

        def test_hangs_2():
            time.sleep(60)

        def test_after_1():
            pass

        def test_after_2():
            pass
        """
    )
    report = pytester.path / "expiry.json"
    run = run_pytest(
        "--tx", first.spec, "--tx", second.spec, "--dist", "load", DEADLINE, GRACE,
        f"--expiry-report={report}",
    )  # fmt: skip
    run.result.assert_outcomes(failed=4, passed=2)
    [line] = [line for line in run.output.splitlines() if "own watchdog on" in line]
    assert line.startswith("expiry: 2 workers on 2 hosts; own watchdog on ")
    assert first.address in line and second.address in line
    assert "crashed while running" not in run.output
    document = json.loads(report.read_text())
    kinds = sorted((e["event"], e["nodeid"].split("::")[1]) for e in document["events"])
    assert kinds == [
        ("expired", "test_hangs_1"),
        ("expired", "test_hangs_2"),
        ("hard_killed", "test_holds_the_gil_1"),
        ("hard_killed", "test_holds_the_gil_2"),
    ]


def test_the_session_budget_reaches_a_worker_on_another_host(
    pytester: pytest.Pytester, run_pytest: RunPytest, remote_hosts: StartHost
) -> None:
    host = remote_hosts()
    pytester.makepyfile(
        """
        import time

        def test_hangs():
            time.sleep(60)

        def test_later():
            pass
        """
    )
    run = run_pytest("--tx", host.spec, "--dist", "load", "--expiry-session=4", GRACE)
    run.result.assert_outcomes(failed=1, skipped=1)
    failure = run.testcase("test_hangs").find("failure")
    assert failure is not None and "Expired: still running" in failure.get("message", "")
    skipped = run.testcase("test_later").find("skipped")
    assert skipped is not None
    assert "not run: the session's expiry budget of 4 s" in skipped.get("message", "")


def test_a_worker_outside_its_main_thread_says_it_has_no_deadlines(
    pytester: pytest.Pytester, run_pytest: RunPytest, remote_hosts: StartHost
) -> None:
    """execnet's own socket server may run a worker in a thread of its own: no signal
    reaches it there. The worker says so, and its tests run as without the plugin."""
    host = remote_hosts("--thread")
    pytester.makepyfile("def test_one():\n    pass\n")
    run = run_pytest("--tx", host.spec, "--dist", "load", DEADLINE, "-W", "default")
    run.result.assert_outcomes(passed=1)
    assert "runs its tests outside its process's main thread" in run.output
    assert "INTERNALERROR" not in run.output
