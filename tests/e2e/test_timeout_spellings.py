"""pytest-timeout's every spelling, end to end (README: Works with).

While pytest-timeout is not installed, a suite configured for it runs unchanged under
pytest-expiry: every option, ini value, environment variable and marker form of
pytest-timeout 2.4 is accepted and means what it meant there. With pytest-timeout installed
as well (the compatibility job of ``.ci/run``), it owns those names, and a session in which
both plugins would enforce deadlines says so once, in the header.

A test meant to expire hangs for 30 s under a 0.3 s deadline; one meant to pass sleeps 0.6 s
in a fixture that its deadline does not cover.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest

from pytest_expiry.timeout_compat import compat_possible

if TYPE_CHECKING:
    from tests.helpers import Run, RunPytest

spellings_only = pytest.mark.skipif(
    not compat_possible(), reason="pytest-timeout is installed: the spellings are its own"
)
with_pytest_timeout = pytest.mark.skipif(
    compat_possible(), reason="needs pytest-timeout installed (the compatibility job of .ci/run)"
)

HANGS = """
import time
import pytest

{decorator}
def test_hangs():
    time.sleep(30)
"""

SLOW_FIXTURE = """
import time
import pytest

@pytest.fixture
def slow_fixture():
    time.sleep(0.6)
    yield
    time.sleep(0.6)

{decorator}
def test_with_slow_fixture(slow_fixture):
    pass
"""


def expired(run: Run, name: str = "test_hangs") -> Run:
    run.result.assert_outcomes(failed=1)
    assert f"{name} expired in call after " in run.output
    assert "pytest_expiry.Expired: still running in call after " in run.output
    return run


def header_lines(run: Run) -> list[str]:
    return [line for line in run.result.stdout.lines if line.startswith("expiry: ")]


# --- the method ----------------------------------------------------------------------


@spellings_only
@pytest.mark.parametrize(
    ("arguments", "ini", "where"),
    [
        (["--timeout-method=thread"], "", "--timeout-method=thread"),
        (["--timeout_method=signal"], "", "--timeout-method=signal"),
        ([], "timeout_method = thread", "ini timeout_method=thread"),
    ],
    ids=["dashes", "underscore", "ini"],
)
def test_a_timeout_method_is_accepted_and_explained_once_in_the_header(
    pytester: pytest.Pytester, run_pytest: RunPytest, arguments: list[str], ini: str, where: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(HANGS.format(decorator=""))
    run = expired(run_pytest("--timeout=0.3", *arguments))
    notes = [line for line in header_lines(run) if "accepted and unused" in line]
    assert notes == [
        f"expiry: {where} accepted and unused: the watchdog has one method (it interrupts the "
        "test where it hangs, and kills its process when it cannot be interrupted)"
    ]


@spellings_only
def test_without_a_method_the_header_says_nothing_of_one(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(HANGS.format(decorator=""))
    run = expired(run_pytest("--timeout=0.3"))
    assert not [line for line in header_lines(run) if "method" in line]


@spellings_only
def test_an_unknown_timeout_method_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(HANGS.format(decorator=""))
    run = run_pytest("--timeout-method=fork", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "argument --timeout-method: invalid choice: 'fork'" in run.output
    pytester.makeini("[pytest]\ntimeout_method = fork\n")
    run = run_pytest(junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ini option timeout_method = fork: 'fork' is not one of signal, thread" in run.output
    assert "Traceback" not in run.output


# --- the marker ----------------------------------------------------------------------


@spellings_only
@pytest.mark.parametrize(
    "decorator",
    [
        '@pytest.mark.timeout("0.3")',
        "@pytest.mark.timeout(timeout=0.3)",
        '@pytest.mark.timeout(0.3, "thread")',
        '@pytest.mark.timeout(0.3, method="signal")',
        "@pytest.mark.timeout(0.3, func_only=False)",
    ],
)
def test_every_form_of_the_timeout_marker_sets_the_deadline(
    pytester: pytest.Pytester, run_pytest: RunPytest, decorator: str
) -> None:
    pytester.makepyfile(HANGS.format(decorator=decorator))
    expired(run_pytest())


@spellings_only
@pytest.mark.parametrize(
    "decorator", ["@pytest.mark.timeout(None)", '@pytest.mark.timeout(method="thread")']
)
def test_a_timeout_marker_without_a_deadline_keeps_the_default_one(
    pytester: pytest.Pytester, run_pytest: RunPytest, decorator: str
) -> None:
    """As in pytest-timeout: the marker sets only what it names."""
    pytester.makepyfile(HANGS.format(decorator=decorator))
    expired(run_pytest("--timeout=0.3"))


@spellings_only
def test_the_markers_func_only_alone_keeps_the_default_deadline_for_the_call(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(SLOW_FIXTURE.format(decorator="@pytest.mark.timeout(func_only=True)"))
    run_pytest("--timeout=0.3").result.assert_outcomes(passed=1)


@spellings_only
@pytest.mark.parametrize(
    ("decorator", "problem"),
    [
        ('timeout(1, method="fork")', "method must be one of signal, thread, not 'fork'"),
        ('timeout(1, "fork")', "method must be one of signal, thread, not 'fork'"),
        ("timeout()", "expected @pytest.mark.timeout(timeout=None, method=None"),
        ('timeout(1, "thread", 3)', "expected @pytest.mark.timeout(timeout=None, method=None"),
        ("timeout(1, timeout=2)", "expected @pytest.mark.timeout(timeout=None, method=None"),
        ('timeout("soon")', "@pytest.mark.timeout('soon'): timeout must be a number"),
    ],
)
def test_a_timeout_marker_pytest_timeout_rejects_is_a_usage_error(
    pytester: pytest.Pytester, run_pytest: RunPytest, decorator: str, problem: str
) -> None:
    pytester.makepyfile(HANGS.format(decorator=f"@pytest.mark.{decorator}"))
    run = run_pytest(junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    assert problem in run.output
    assert "Traceback" not in run.output


# --- func_only, the session budget, debuggers ------------------------------------------


@spellings_only
def test_ini_timeout_func_only_leaves_the_fixtures_out(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makeini("[pytest]\ntimeout = 0.3\ntimeout_func_only = true\n")
    pytester.makepyfile(SLOW_FIXTURE.format(decorator=""))
    run_pytest().result.assert_outcomes(passed=1)
    pytester.makeini("[pytest]\ntimeout = 0.3\n")
    run_pytest().result.assert_outcomes(errors=1)  # setup counts: it expires there


@spellings_only
@pytest.mark.parametrize(
    ("arguments", "ini"),
    [(["--session-timeout=1.5"], ""), ([], "session_timeout = 1.5")],
    ids=["option", "ini"],
)
def test_session_timeout_is_the_session_budget(
    pytester: pytest.Pytester, run_pytest: RunPytest, arguments: list[str], ini: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.mark.parametrize("step", range(10))
        def test_step(step):
            time.sleep(0.4)
        """
    )
    run = run_pytest(*arguments)
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("failed") == 1 and outcomes.get("skipped", 0) >= 5, outcomes
    assert "SESSION BUDGET exceeded" in run.output
    assert "session budget 1.5 s" in header_lines(run)[0]


@spellings_only
@pytest.mark.parametrize(
    ("arguments", "ini"),
    [
        (["--timeout-disable-debugger-detection"], ""),
        ([], "timeout_disable_debugger_detection = 1"),
    ],
    ids=["option", "ini"],
)
def test_without_debugger_detection_a_test_in_pdb_expires(
    pytester: pytest.Pytester, run_pytest: RunPytest, arguments: list[str], ini: str
) -> None:
    """The default pauses the clock in pdb (tests/e2e/test_reports.py); pytest-timeout's
    switch turns that off, so the second spent in pdb passes the 0.5 s deadline."""
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.expires(0.5)
        def test_debugged():
            breakpoint()
        """
    )
    result = pytester.run(
        sys.executable, "-m", "pytest", *arguments,
        stdin=b"import time; time.sleep(1)\ncontinue\n", timeout=60,
    )  # fmt: skip
    output = result.stdout.str() + result.stderr.str()
    assert "PDB set_trace" in output
    result.assert_outcomes(failed=1)
    assert "pytest_expiry.Expired: still running in call after " in output
    assert "not paused in a debugger" in output


# --- both plugins installed -----------------------------------------------------------


@with_pytest_timeout
def test_with_both_plugins_enforcing_the_header_warns_once_with_what_to_do(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("def test_quick():\n    pass\n")
    run = run_pytest("--expiry=5", "--timeout=5")
    run.result.assert_outcomes(passed=1)
    warnings = [line for line in header_lines(run) if "pytest-timeout is also enforcing" in line]
    assert len(warnings) == 1, run.output
    assert "(--timeout=5)" in warnings[0] and "'-p no:timeout'" in warnings[0]


@with_pytest_timeout
def test_with_both_plugins_enforcing_and_no_header_the_summary_warns(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """``-q`` hides the header: the warning is then the summary's last expiry line."""
    pytester.makepyfile("def test_quick():\n    pass\n")
    run = run_pytest("--expiry=5", "--timeout=5", "-q")
    run.result.assert_outcomes(passed=1)
    assert run.output.count("pytest-timeout is also enforcing") == 1, run.output
    run.result.stdout.fnmatch_lines(["WARNING pytest-timeout is also enforcing deadlines*"])


@with_pytest_timeout
@pytest.mark.parametrize(
    "arguments",
    [["--expiry=5"], ["--timeout=5"], ["--expiry=5", "--timeout=5", "-p", "no:timeout"]],
)
def test_with_one_of_them_enforcing_the_header_does_not_warn(
    pytester: pytest.Pytester, run_pytest: RunPytest, arguments: list[str]
) -> None:
    pytester.makepyfile("def test_quick():\n    pass\n")
    run = run_pytest(*arguments)
    run.result.assert_outcomes(passed=1)
    assert "pytest-timeout is also enforcing" not in run.output


@with_pytest_timeout
def test_with_pytest_timeout_disabled_its_spellings_are_honoured(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """``-p no:timeout``, as the header's warning advises: its settings then count here."""
    pytester.makeini("[pytest]\ntimeout = 0.3\ntimeout_method = thread\n")
    pytester.makepyfile(HANGS.format(decorator=""))
    run = expired(run_pytest("-p", "no:timeout"))
    assert "expiry: ini timeout_method=thread accepted and unused" in run.output


@with_pytest_timeout
def test_with_pytest_timeout_installed_its_marker_is_its_own(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """pytest-timeout's marker is then pytest-timeout's: pytest-expiry's deadline is the
    option's, and pytest-timeout's fires first (its own report, not an expiry)."""
    pytester.makepyfile(HANGS.format(decorator="@pytest.mark.timeout(0.5)"))
    run = run_pytest("--expiry=10")
    run.result.assert_outcomes(failed=1)
    assert "Timeout" in run.output
    assert "pytest_expiry.Expired" not in run.output
