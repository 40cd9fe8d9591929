"""Processes a test leaves running after its teardown are LEAKED (``--expiry-leaks``).

The rule: a child of the test process that appeared during the test and is still alive after
its teardown, with everything below it; escapees (double fork, setsid) count because the
test process is a child subreaper. Processes a wider-scoped fixture started, and processes
that existed before the test, are never touched.
"""

from __future__ import annotations

import json
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

LEAKY = """
    import subprocess
    import sys

    import pytest

    @pytest.fixture(scope="module")
    def server():
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        yield process
        process.kill()
        process.wait()

    def test_starts_with_the_module_server(server):
        assert server.poll() is None

    def test_leaks_a_child():
        subprocess.Popen(["sleep", "{seconds}"])

    def test_leaks_an_escapee_by_setsid_and_double_fork():
        subprocess.run(["sh", "-c", "(setsid sleep {seconds} &); exit 0"], check=True)

    def test_cleans_up_after_itself():
        subprocess.run(["true"], check=True)

    def test_finds_the_module_server_still_running(server):
        assert server.poll() is None
"""
LEAKERS = ("test_leaks_a_child", "test_leaks_an_escapee_by_setsid_and_double_fork")


@pytest.mark.parametrize("mode", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_leaked_processes_are_reported_and_ended_by_default(pytester, run_pytest, mode):
    pytester.makepyfile(LEAKY.replace("{seconds}", "60"))
    report = pytester.path / "expiry.json"
    run = run_pytest("--expiry=10", f"--expiry-report={report}", *mode)
    run.result.assert_outcomes(passed=5)  # the fixture's process was never touched
    assert run.output.count("LEAKED ") == 2
    for name in LEAKERS:
        assert f".py::{name} left 1 processes running (ended)" in run.output
        properties = {p.get("name"): p.get("value") for p in run.testcase(name).iter("property")}
        assert "expiry_leaked" in properties
    leaked = [e for e in json.loads(report.read_text())["events"] if e["event"] == "leaked"]
    assert sorted(e["nodeid"].split("::")[1] for e in leaked) == sorted(LEAKERS)
    assert all("SIGTERM" in names for e in leaked for names in e["signals"].values())
    # run_pytest then proves that nothing is left running, escapee included


def test_in_fail_mode_a_leaking_test_errors_in_teardown(pytester, run_pytest):
    pytester.makepyfile(LEAKY.replace("{seconds}", "60"))
    run = run_pytest("--expiry=10", "--expiry-leaks=fail")
    run.result.assert_outcomes(passed=5, errors=2)
    for name in LEAKERS:
        assert run.testcase(name).find("error") is not None


def test_in_warn_mode_leaks_are_reported_and_left_alone(pytester, run_pytest):
    pytester.makepyfile(LEAKY.replace("{seconds}", "2"))  # they end by themselves
    run = run_pytest("--expiry=10", "--expiry-leaks=warn")
    run.result.assert_outcomes(passed=5)
    assert run.output.count("left 1 processes running (left running)") == 2


def test_leak_detection_can_be_turned_off(pytester, run_pytest):
    pytester.makepyfile(LEAKY.replace("{seconds}", "2"))
    run = run_pytest("--expiry=10", "--expiry-leaks=off")
    run.result.assert_outcomes(passed=5)
    assert "LEAKED" not in run.output


def test_a_bad_leak_mode_is_a_usage_error(pytester, run_pytest):
    pytester.makepyfile("def test_ok(): pass")
    run = run_pytest("--expiry=1", "--expiry-leaks=sometimes", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "sometimes" in run.output and "kill" in run.output
