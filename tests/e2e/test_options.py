"""Options, ini values, environment variables and markers, end to end (README: Options).

Every test runs pytest on a small test file and checks what a user would see: whether the
inner test expired or passed, the session header, the exit code and the message of a usage
error. Sessions that run tests run in a subprocess (``run_pytest``); sessions that must stop
at a usage error before any test runs mostly run in this process (``usage_error``).

Deadlines are short (0.3 s); a test meant to expire hangs for 30 s, so it can only end by
expiring; a test meant to pass sleeps 0.6 s, well past the 0.3 s deadline it escapes and well
inside the one it gets.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections.abc import Sequence
from typing import Protocol

import pytest

from pytest_expiry.options import MAX_SCALE, MAX_SECONDS, MIN_SECONDS

try:
    from tests.helpers import NO_EXTRAS, Run, RunPytest
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import NO_EXTRAS, Run, RunPytest  # type: ignore[no-redef,import-not-found]

HANG = 30.0
"""How long a test meant to expire sleeps: it can only end by expiring."""

STRICT = 0.3
"""A deadline the inner test cannot meet."""

LOOSE = 5.0
"""A deadline the inner test meets with ease."""


def write_test(
    pytester: pytest.Pytester,
    sleep: float,
    decorators: Sequence[str] = (),
    name: str = "test_sleeps",
) -> None:
    """A test module with one test that sleeps ``sleep`` seconds under ``decorators``."""
    lines = ["import time", "import pytest", "", *decorators, f"def {name}():"]
    lines.append(f"    time.sleep({sleep})")
    pytester.makepyfile("\n".join(lines) + "\n")


def ini(pytester: pytest.Pytester, **values: object) -> None:
    body = "".join(f"{key} = {value}\n" for key, value in values.items())
    pytester.makeini("[pytest]\n" + body)


def assert_expired(run: Run, name: str = "test_sleeps") -> None:
    run.result.assert_outcomes(failed=1)
    assert f"{name} expired" in run.output
    assert "pytest_expiry.Expired" in run.output


def assert_passed(run: Run) -> None:
    run.result.assert_outcomes(passed=1)
    assert "Expired" not in run.output


class RunsToAUsageError(Protocol):
    """The type of the ``usage_error`` fixture."""

    def __call__(self, *arguments: str) -> str: ...


@pytest.fixture
def usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> RunsToAUsageError:
    """``usage_error(*arguments)`` runs pytest in this process, for a session that must stop
    at a usage error before any test runs (in a subprocess, each of these runs costs ten
    times as much). It returns the output after asserting exit code 4 and nothing of the
    plugin's insides: no INTERNALERROR, no traceback."""
    for variable in ("PYTEST_EXPIRY", "PYTEST_TIMEOUT", "PYTEST_EXPIRY_SIGNALS"):
        monkeypatch.delenv(variable, raising=False)

    def run(*arguments: str) -> str:
        result = pytester.runpytest_inprocess(*NO_EXTRAS, "-p", "no:cacheprovider", *arguments)
        output = result.stdout.str() + "\n" + result.stderr.str()
        assert result.ret == pytest.ExitCode.USAGE_ERROR, output
        assert "INTERNALERROR" not in output
        assert "Traceback" not in output
        assert "pytest_expiry/" not in output
        assert "passed" not in output
        return output

    return run


# --- where a deadline comes from -------------------------------------------------------

CHAIN = [
    "@pytest.mark.expires",
    "@pytest.mark.timeout",
    "--expiry",
    "--timeout",
    "PYTEST_EXPIRY",
    "PYTEST_TIMEOUT",
    "ini expiry",
    "ini timeout",
]
"""Every place a deadline comes from, highest precedence first (README: Options). The
``timeout`` spellings are pytest-timeout's, honoured while it is not installed."""

TIMEOUT_SPELLINGS = [source for source in CHAIN if "timeout" in source.lower()]


class Deadlines:
    """A test module with one sleeping test, and deadlines set for it through any of the
    places in :data:`CHAIN`."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        self._pytester = pytester
        self._monkeypatch = monkeypatch
        self._decorators: list[str] = []
        self._arguments: list[str] = []
        self._ini: dict[str, float] = {}

    def set(self, source: str, value: float) -> Deadlines:
        if source.startswith("@pytest.mark."):
            self._decorators.append(f"{source}({value})")
        elif source.startswith("--"):
            self._arguments.append(f"{source}={value}")
        elif source.startswith("PYTEST_"):
            self._monkeypatch.setenv(source, str(value))
        else:
            self._ini[source.removeprefix("ini ")] = value
        return self

    def run(self, run_pytest: RunPytest, sleep: float, *arguments: str) -> Run:
        """Run the test, which sleeps ``sleep`` seconds, under the deadlines set."""
        write_test(self._pytester, sleep, self._decorators)
        if self._ini:
            ini(self._pytester, **self._ini)
        return run_pytest(*self._arguments, *arguments)


@pytest.fixture
def deadlines(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Deadlines:
    return Deadlines(pytester, monkeypatch)


def test_pytest_timeout_is_not_installed_here() -> None:
    """The premise of the tests of pytest-timeout's spellings."""
    from pytest_expiry.timeout_compat import compat_possible  # noqa: PLC0415

    assert compat_possible()


@pytest.mark.parametrize("source", CHAIN)
def test_each_source_alone_gives_a_test_its_deadline(
    run_pytest: RunPytest, deadlines: Deadlines, source: str
) -> None:
    assert_expired(deadlines.set(source, STRICT).run(run_pytest, HANG))


def test_without_any_setting_a_test_has_no_deadline(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 0.6)
    assert_passed(run_pytest())


@pytest.mark.parametrize("source", TIMEOUT_SPELLINGS)
def test_expiry_no_timeout_compat_ignores_pytest_timeout_spellings(
    run_pytest: RunPytest, deadlines: Deadlines, source: str
) -> None:
    run = deadlines.set(source, STRICT).run(run_pytest, 0.6, "--expiry-no-timeout-compat")
    assert_passed(run)


# --- precedence -------------------------------------------------------------------------

PRECEDENCE = [
    *itertools.pairwise(CHAIN),
    ("@pytest.mark.expires", "--expiry"),
    ("--expiry", "PYTEST_EXPIRY"),
    ("PYTEST_EXPIRY", "ini expiry"),
]
PRECEDENCE_IDS = [f"{higher} over {lower}" for higher, lower in PRECEDENCE]


@pytest.mark.parametrize(("higher", "lower"), PRECEDENCE, ids=PRECEDENCE_IDS)
def test_a_looser_deadline_from_a_higher_source_overrides_a_stricter_lower_one(
    run_pytest: RunPytest, deadlines: Deadlines, higher: str, lower: str
) -> None:
    run = deadlines.set(higher, LOOSE).set(lower, STRICT).run(run_pytest, 0.6)
    assert_passed(run)


@pytest.mark.parametrize(("higher", "lower"), PRECEDENCE, ids=PRECEDENCE_IDS)
def test_a_stricter_deadline_from_a_higher_source_overrides_a_looser_lower_one(
    run_pytest: RunPytest, deadlines: Deadlines, higher: str, lower: str
) -> None:
    run = deadlines.set(higher, STRICT).set(lower, 60).run(run_pytest, HANG)
    assert_expired(run)


def test_expiry_zero_on_the_command_line_disables_a_deadline_from_the_ini_file(
    run_pytest: RunPytest, deadlines: Deadlines
) -> None:
    assert_passed(deadlines.set("ini expiry", STRICT).set("--expiry", 0).run(run_pytest, 0.6))


def test_an_expires_zero_marker_disables_the_deadline_of_its_test(
    run_pytest: RunPytest, deadlines: Deadlines
) -> None:
    run = deadlines.set("--expiry", STRICT).set("@pytest.mark.expires", 0).run(run_pytest, 0.6)
    assert_passed(run)


# --- the expires marker -----------------------------------------------------------------

LEVELS = {
    "function": """
        import time
        import pytest

        @pytest.mark.expires(0.3)
        def test_sleeps():
            time.sleep(30)
        """,
    "class": """
        import time
        import pytest

        @pytest.mark.expires(0.3)
        class TestGroup:
            def test_sleeps(self):
                time.sleep(30)
        """,
    "module": """
        import time
        import pytest

        pytestmark = pytest.mark.expires(0.3)

        def test_sleeps():
            time.sleep(30)
        """,
}


@pytest.mark.parametrize("level", LEVELS)
def test_an_expires_marker_gives_a_deadline_at_any_level(
    pytester: pytest.Pytester, run_pytest: RunPytest, level: str
) -> None:
    pytester.makepyfile(LEVELS[level])
    assert_expired(run_pytest())


def test_the_closest_expires_marker_wins(pytester: pytest.Pytester, run_pytest: RunPytest) -> None:
    pytester.makepyfile(
        """
        import time
        import pytest

        pytestmark = pytest.mark.expires(0.3)

        def test_module_deadline():
            time.sleep(30)

        @pytest.mark.expires(5)
        class TestLooser:
            def test_class_deadline(self):
                time.sleep(0.6)

            @pytest.mark.expires(0.3)
            def test_function_deadline(self):
                time.sleep(30)
        """
    )
    run = run_pytest()
    run.result.assert_outcomes(passed=1, failed=2)
    assert run.testcase("test_class_deadline").find("failure") is None
    assert run.testcase("test_module_deadline").find("failure") is not None
    assert run.testcase("test_function_deadline").find("failure") is not None


def test_the_expires_marker_is_documented_in_pytest_markers(run_pytest: RunPytest) -> None:
    run = run_pytest("--markers", junit=False)
    run.result.stdout.fnmatch_lines(["@pytest.mark.expires(seconds, *, func_only=False):*"])


def test_the_timeout_marker_is_documented_in_pytest_markers_while_honoured(
    run_pytest: RunPytest,
) -> None:
    run = run_pytest("--markers", junit=False)
    run.result.stdout.fnmatch_lines(
        ["@pytest.mark.timeout(timeout=None, method=None, *, func_only=None):*"]
    )


def test_the_timeout_marker_is_not_documented_without_timeout_compat(run_pytest: RunPytest) -> None:
    run = run_pytest("--markers", "--expiry-no-timeout-compat", junit=False)
    assert "@pytest.mark.timeout" not in run.result.stdout.str()


# --- func_only --------------------------------------------------------------------------

SLOW_FIXTURE = """
    import time
    import pytest

    @pytest.fixture
    def slow():
        time.sleep(0.7)
        yield
        time.sleep(0.7)

    {decorator}
    def test_with_slow_fixture(slow):
        pass
    """

HANG_IN_FUNCTION = """
    import time
    import pytest

    @pytest.fixture
    def quick():
        yield

    {decorator}
    def test_hangs(quick):
        time.sleep(30)
    """

FUNC_ONLY = {
    "--expiry-func-only": ("", ["--expiry=0.5", "--expiry-func-only"]),
    "func_only=True": ("@pytest.mark.expires(0.5, func_only=True)", []),
}


@pytest.mark.parametrize("how", FUNC_ONLY)
def test_with_func_only_slow_fixture_setup_and_teardown_do_not_count(
    pytester: pytest.Pytester, run_pytest: RunPytest, how: str
) -> None:
    decorator, arguments = FUNC_ONLY[how]
    pytester.makepyfile(SLOW_FIXTURE.format(decorator=decorator))
    run = run_pytest(*arguments)
    run.result.assert_outcomes(passed=1)
    assert "Expired" not in run.output


@pytest.mark.parametrize("how", FUNC_ONLY)
def test_with_func_only_a_hang_in_the_test_function_still_expires(
    pytester: pytest.Pytester, run_pytest: RunPytest, how: str
) -> None:
    decorator, arguments = FUNC_ONLY[how]
    pytester.makepyfile(HANG_IN_FUNCTION.format(decorator=decorator))
    assert_expired(run_pytest(*arguments), "test_hangs")


def test_without_func_only_a_slow_fixture_setup_counts(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(SLOW_FIXTURE.format(decorator=""))
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(errors=1)
    assert "Expired: still running in setup after " in run.output


# --- scale ------------------------------------------------------------------------------


def test_expiry_scale_multiplies_the_deadline(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 0.6, ["@pytest.mark.expires(0.3)"])
    assert_passed(run_pytest("--expiry-scale=3"))


def test_without_expiry_scale_the_same_test_expires(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 0.6, ["@pytest.mark.expires(0.3)"])
    assert_expired(run_pytest())


# --- the session header -----------------------------------------------------------------


def header_line(run: Run) -> str:
    lines = [line for line in run.result.stdout.lines if line.startswith("expiry: ")]
    assert len(lines) == 1, run.output
    return lines[0]


def test_the_header_shows_the_default_settings(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    line = header_line(run_pytest())
    assert line.startswith("expiry: none by default (markers only) (")
    for shown in ("scale 1", "grace 2 s", "slow at 50%", "pytest-timeout markers honoured"):
        assert shown in line
    assert "func_only" not in line


HEADER_SETTINGS = {
    "--expiry": ("2", "expiry: 2 s per test ("),
    "--expiry-scale": ("3", "scale 3"),
    "--expiry-grace": ("1", "grace 1 s"),
    "--expiry-slow": ("0.25", "slow at 25%"),
}


def test_the_header_shows_the_settings_given_on_the_command_line(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    arguments = [f"{option}={value}" for option, (value, _) in HEADER_SETTINGS.items()]
    run = run_pytest(*arguments, "--expiry-func-only", "--expiry-no-timeout-compat")
    line = header_line(run)
    for _, shown in HEADER_SETTINGS.values():
        assert shown in line
    assert "func_only" in line
    assert "pytest-timeout" not in line


@pytest.mark.parametrize(("yes", "no"), [("true", "false"), ("yes", "0")])
def test_the_header_shows_the_settings_given_in_the_ini_file(
    pytester: pytest.Pytester, run_pytest: RunPytest, yes: str, no: str
) -> None:
    """Yes/no ini values are read as pytest reads any bool: true/yes/1, false/no/0..."""
    pytester.makepyfile("def test_nothing(): pass\n")
    values = {option[2:].replace("-", "_"): value for option, (value, _) in HEADER_SETTINGS.items()}
    ini(pytester, **values, expiry_func_only=yes, expiry_timeout_compat=no)
    line = header_line(run_pytest())
    for _, shown in HEADER_SETTINGS.values():
        assert shown in line
    assert "func_only" in line
    assert "pytest-timeout" not in line


def test_the_header_says_when_slow_notices_are_off(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    assert "no SLOW notices" in header_line(run_pytest("--expiry-slow=0"))


# --- SLOW notices -----------------------------------------------------------------------


SLOW_LINE = r"^SLOW \S+::test_sleeps: 0\.\d\d s of its 1 s deadline$"


def test_a_test_past_the_slow_fraction_is_named_on_its_own_line_and_in_the_summary(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 0.6)
    run = run_pytest("--expiry=1", "--expiry-slow=0.3")
    run.result.assert_outcomes(passed=1)
    assert len(re.findall(SLOW_LINE, run.result.stdout.str(), re.MULTILINE)) == 2, run.output
    assert "still running" not in run.output  # nothing is written while the test runs


def test_a_func_only_test_slow_in_its_call_is_named_though_its_call_passed(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The SLOW record of a func_only scope rides on the passing call's report, not on the
    teardown's: the session's record reads passing reports that carry records."""
    write_test(pytester, 0.6, ["@pytest.mark.expires(1, func_only=True)"])
    run = run_pytest("--expiry-slow=0.3", "--expiry-report=slow.json")
    run.result.assert_outcomes(passed=1)
    assert len(re.findall(SLOW_LINE, run.result.stdout.str(), re.MULTILINE)) == 2, run.output
    [event] = json.loads((pytester.path / "slow.json").read_text())["events"]
    assert (event["event"], event["phase"]) == ("slow", "call")


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_slow_line_never_shares_a_line_with_progress_letters(
    pytester: pytest.Pytester, run_pytest: RunPytest, workers: list[str]
) -> None:
    pytester.makepyfile(
        "import time\n"
        "def test_quick(): pass\n"
        "def test_sleeps(): time.sleep(0.6)\n"
        "def test_quick_again(): pass\n"
    )
    run = run_pytest("--expiry=1", "--expiry-slow=0.3", *workers)
    run.result.assert_outcomes(passed=3)
    lines = run.result.stdout.lines
    slow = [line for line in lines if "SLOW" in line]
    assert len(slow) == 2 and all(re.match(SLOW_LINE, line) for line in slow), run.output


def test_a_test_that_expires_is_not_listed_as_slow(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 5)
    run = run_pytest("--expiry=0.5", "--expiry-slow=0.3")
    run.result.assert_outcomes(failed=1)
    assert "SLOW" not in run.output


def test_a_slow_func_only_test_is_listed_in_the_summary(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 0.6, ["@pytest.mark.expires(1, func_only=True)"])
    run = run_pytest("--expiry-slow=0.3")
    run.result.assert_outcomes(passed=1)
    assert len(re.findall(SLOW_LINE, run.result.stdout.str(), re.MULTILINE)) == 2, run.output


def test_expiry_slow_zero_turns_slow_notices_off(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, 0.6)
    run = run_pytest("--expiry=1", "--expiry-slow=0")
    run.result.assert_outcomes(passed=1)
    assert not re.search(r"^SLOW ", run.output, re.MULTILINE)


# --- bad input --------------------------------------------------------------------------

SECONDS = "a number of seconds (0 disables; otherwise at least 0.001 s and at most 10000000 s"
SECONDS_ALLOWED = f"is not {SECONDS}"
SCALE_ALLOWED = "is not a factor from 0.01 to 100"
REPORT_ALLOWED = "give the path of a file in a writable directory"
PAST_THE_LIMITS = ["1e-300", "0.0005", "10000001", "1e308"]
BAD_OPTIONS = [
    *[("--expiry", value, SECONDS_ALLOWED) for value in ["abc", "-1", "nan", "inf", ""]],
    *[("--expiry", value, SECONDS_ALLOWED) for value in PAST_THE_LIMITS],
    *[("--expiry-grace", value, "is not a number of seconds from 0 to 10000000")
      for value in ["abc", "-1", "nan", "inf", "", "1e308"]],
    *[("--expiry-scale", v, SCALE_ALLOWED) for v in ["abc", "0", "-1", "nan", "inf", ""]],
    *[("--expiry-scale", v, SCALE_ALLOWED) for v in ["1e308", "101", "0.001"]],
    *[
        ("--expiry-slow", value, "is not a fraction of the deadline")
        for value in ["abc", "-0.1", "1.0", "2", "nan", "inf", ""]
    ],
    ("--timeout", "abc", SECONDS_ALLOWED),
    ("--timeout", "1e-300", SECONDS_ALLOWED),
    ("--expiry-collect", "abc", SECONDS_ALLOWED),
    ("--expiry-collect", "1e308", SECONDS_ALLOWED),
    ("--expiry-exit", "-1", SECONDS_ALLOWED),
    ("--expiry-exit", "1e308", SECONDS_ALLOWED),
    ("--expiry-session", "1e-300", SECONDS_ALLOWED),
    ("--expiry-report", "/", f"cannot be written: it names a directory; {REPORT_ALLOWED}"),
    ("--expiry-report", ".", "cannot be written: it names a directory"),
    ("--expiry-report", "blocker/r.json", "cannot be written: blocker is not a directory"),
    ("--expiry-child-stacks", "sometimes", "invalid choice: 'sometimes' (choose from 'auto'"),
    ("--expiry-leaks", "sometimes", "invalid choice: 'sometimes' (choose from 'kill'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "allowed"), BAD_OPTIONS, ids=[f"{o}={v}" for o, v, _ in BAD_OPTIONS]
)
def test_a_bad_option_value_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, usage_error: RunsToAUsageError, option: str, value: str, allowed: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    (pytester.path / "blocker").write_text("a regular file, not a directory\n")
    output = usage_error(f"{option}={value}")
    said = allowed if allowed.startswith("invalid choice") else f"{value!r} {allowed}"
    assert f"argument {option}: {said}" in output


BAD_INI = [
    ("expiry", "abc", SECONDS_ALLOWED),
    ("expiry", "-1", SECONDS_ALLOWED),
    ("expiry", "1e-300", SECONDS_ALLOWED),
    ("expiry_grace", "nan", "is not a number of seconds from 0 to 10000000"),
    ("expiry_scale", "0", SCALE_ALLOWED),
    ("expiry_scale", "1e308", SCALE_ALLOWED),
    ("expiry_slow", "1", "is not a fraction of the deadline"),
    ("expiry_exit", "1e308", SECONDS_ALLOWED),
    ("expiry_report", "/", "cannot be written: it names a directory"),
    ("expiry_child_stacks", "sometimes", "expected one of auto, hook, off"),
    ("expiry_leaks", "sometimes", "expected one of kill, warn, fail, off"),
    ("timeout", "inf", SECONDS_ALLOWED),
    ("timeout", "1e-300", SECONDS_ALLOWED),
]
BAD_FLAGS = ["expiry_func_only", "expiry_timeout_compat"]


@pytest.mark.parametrize(
    ("name", "value", "allowed"), BAD_INI, ids=[f"{n} = {v}" for n, v, _ in BAD_INI]
)
def test_a_bad_ini_value_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, usage_error: RunsToAUsageError, name: str, value: str, allowed: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    ini(pytester, **{name: value})
    output = usage_error()
    assert f"ini option {name} = {value}" in output
    assert allowed in output


@pytest.mark.parametrize("name", BAD_FLAGS)
def test_a_yes_no_ini_value_that_is_neither_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, usage_error: RunsToAUsageError, name: str
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    ini(pytester, **{name: "maybe"})
    output = usage_error()
    assert f"ini option {name}: " in output
    assert "'maybe'" in output
    assert "expected true or false" in output


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PYTEST_EXPIRY", "abc"),
        ("PYTEST_EXPIRY", "-1"),
        ("PYTEST_TIMEOUT", "nan"),
        ("PYTEST_EXPIRY", "1e-300"),
        ("PYTEST_TIMEOUT", "1e308"),
    ],
)
def test_a_bad_environment_variable_is_a_usage_error_naming_it(
    pytester: pytest.Pytester,
    usage_error: RunsToAUsageError,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    monkeypatch.setenv(variable, value)
    output = usage_error()
    assert f"environment variable {variable} = {value}: {value!r} {SECONDS_ALLOWED}" in output


EXPECTED = "expected @pytest.mark.expires(seconds, *, func_only=False)"
BAD_MARKERS = [
    ('expires("10s")', "@pytest.mark.expires('10s')", SECONDS),
    ("expires()", "@pytest.mark.expires()", EXPECTED),
    ("expires(1, 2)", "@pytest.mark.expires(1, 2)", EXPECTED),
    ("expires(-1)", "@pytest.mark.expires(-1)", SECONDS),
    ('expires(float("nan"))', "@pytest.mark.expires(nan)", SECONDS),
    ("expires(True)", "@pytest.mark.expires(True)", SECONDS),
    ('expires(1, func_only="yes")', "'yes'", "func_only must be True or False"),
    ("expires(1, bogus=1)", "@pytest.mark.expires(1, bogus=1)", EXPECTED),
    ('timeout("abc")', "@pytest.mark.timeout('abc')", f"timeout must be {SECONDS}"),
    ("expires(1e-300)", "@pytest.mark.expires(1e-300)", f"seconds must be {SECONDS}"),
    ("expires(10**8)", "@pytest.mark.expires(100000000)", f"seconds must be {SECONDS}"),
    ("timeout(1e308)", "@pytest.mark.timeout(1e+308)", f"timeout must be {SECONDS}"),
]


@pytest.mark.parametrize(
    ("marker", "shown", "allowed"), BAD_MARKERS, ids=[m for m, _, _ in BAD_MARKERS]
)
def test_a_marker_with_bad_arguments_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, usage_error: RunsToAUsageError, marker: str, shown: str, allowed: str
) -> None:
    write_test(pytester, 0, [f"@pytest.mark.{marker}"], name="test_marked")
    output = usage_error()
    name = marker.split("(", maxsplit=1)[0]
    assert "invalid expiry markers" in output
    assert "::test_marked: @pytest.mark." + name in output
    assert shown in output
    assert allowed in output


def test_a_marker_with_bad_arguments_is_a_usage_error_in_a_real_run(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The same, end to end in a subprocess, as a user runs pytest."""
    write_test(pytester, 0, ['@pytest.mark.expires("10s")'], name="test_marked")
    run = run_pytest(junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "::test_marked: @pytest.mark.expires('10s'): seconds must be a number" in run.output
    assert "INTERNALERROR" not in run.output
    assert "Traceback" not in run.output


def test_a_bad_option_value_is_a_usage_error_in_a_real_run(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The same, end to end in a subprocess, as a user runs pytest."""
    pytester.makepyfile("def test_nothing(): pass\n")
    run = run_pytest("--expiry=abc", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"argument --expiry: 'abc' {SECONDS_ALLOWED}" in run.output
    assert "Traceback" not in run.output


def test_a_marker_with_bad_arguments_under_xdist_is_a_clear_error(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The session fails, not with an internal error, and says which marker is wrong (exit
    code 4, as without xdist, would be best; a failed or interrupted session will do)."""
    write_test(pytester, 0, ['@pytest.mark.expires("10s")'], name="test_marked")
    run = run_pytest("-n", "2", junit=False)
    assert "INTERNALERROR" not in run.output
    assert run.result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.INTERNAL_ERROR)
    assert "test_marked: @pytest.mark.expires('10s')" in run.output
    assert "1 passed" not in run.output


# --- the limits, at start-up and at their edges ------------------------------------------

REFUSED_AT_START = {
    "--expiry-scale=1e308": "argument --expiry-scale: '1e308' is not a factor from 0.01 to 100",
    "--expiry=1e-300": f"argument --expiry: '1e-300' {SECONDS_ALLOWED}",
    "--expiry-report=/": "argument --expiry-report: '/' cannot be written: it names a directory",
}


@pytest.mark.parametrize("argument", REFUSED_AT_START)
def test_a_value_past_the_limits_stops_a_real_run_at_start(
    pytester: pytest.Pytester, run_pytest: RunPytest, argument: str
) -> None:
    """Each of these was accepted and went wrong later: a traceback from the exit thread
    (the scale), a passing test erroring with "deadline 0 s", a report that could not be
    written, said only at the end."""
    write_test(pytester, 0.1)
    run = run_pytest(argument, junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert REFUSED_AT_START[argument] in run.output
    assert "Traceback" not in run.output
    assert "collected" not in run.output


def test_signals_pytest_needs_are_refused_at_start_in_a_real_run(
    pytester: pytest.Pytester, run_pytest: RunPytest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_EXPIRY_SIGNALS", "SIGINT,SIGTERM")
    write_test(pytester, 0.1)
    run = run_pytest("--expiry=1", junit=False)
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        "environment variable PYTEST_EXPIRY_SIGNALS: 'SIGINT' is not free for pytest-expiry "
        "(SIGINT: Ctrl-C stops pytest with it); use SIGUSR1, SIGUSR2"
    ) in run.output
    assert "Traceback" not in run.output


@pytest.mark.parametrize("value", ["SIGALRM,SIGUSR1", "SIGUSR1,15", "SIGUSR2,SIGHUP", "CHLD,USR1"])
def test_other_signals_someone_else_needs_are_refused_naming_the_variable(
    pytester: pytest.Pytester,
    usage_error: RunsToAUsageError,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    monkeypatch.setenv("PYTEST_EXPIRY_SIGNALS", value)
    output = usage_error()
    assert "environment variable PYTEST_EXPIRY_SIGNALS: " in output
    assert "is not free for pytest-expiry" in output
    assert "use SIGUSR1, SIGUSR2" in output


AT_THE_LIMITS = """
    import threading
    import time

    import pytest

    @pytest.mark.expires({seconds})
    def test_longest_marker():
        # keeps the interpreter exiting while the exit bound waits, as a real suite may
        threading.Thread(target=time.sleep, args=(0.5,)).start()

    def test_longest_default():
        pass
"""


def test_a_session_at_the_upper_limits_runs_and_exits_cleanly(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """The longest deadlines, scaled by the largest factor, are still deadlines every part
    of the plugin can wait for: the guard, the watchdog, the session budget, the exit bound."""
    pytester.makepyfile(AT_THE_LIMITS.format(seconds=MAX_SECONDS))
    limits = ["", "-grace", "-exit", "-session", "-collect"]
    run = run_pytest(
        *[f"--expiry{name}={MAX_SECONDS}" for name in limits], f"--expiry-scale={MAX_SCALE}"
    )
    assert run.result.ret == pytest.ExitCode.OK, run.output
    run.result.assert_outcomes(passed=2)
    assert f"expiry: {MAX_SECONDS:g} s per test (scale {MAX_SCALE:g}" in run.output
    for trouble in ("Exception in thread", "OverflowError", "Traceback"):
        assert trouble not in run.output


def test_a_deadline_the_scale_takes_below_1_ms_is_1_ms(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    write_test(pytester, HANG, [f"@pytest.mark.expires({MIN_SECONDS})"])
    run = run_pytest("--expiry-scale=0.01")
    assert_expired(run)
    assert "deadline 0.001 s" in run.output
    assert "deadline 0 s" not in run.output


# --- leak mode and child stacks -----------------------------------------------------------

LEAKS_A_SHORT_SLEEP = """
    import subprocess

    def test_leaks():
        subprocess.Popen(["sleep", "1"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="leaks are watched on Linux")
def test_by_default_a_leaked_process_is_reported_and_left_running(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    """No option: ``warn``. No deadline either: leak detection needs none."""
    pytester.makepyfile(LEAKS_A_SHORT_SLEEP)
    run = run_pytest()
    run.result.assert_outcomes(passed=1)
    assert "::test_leaks left 1 processes running (left running)" in run.output
    assert "signals: -" in run.output
    assert "SIGTERM" not in run.output
    # the sleep ends by itself; run_pytest then proves that nothing is left running


def test_the_help_documents_leak_modes_child_stacks_and_yes_no_ini_values(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest_inprocess(*NO_EXTRAS, "-p", "no:cacheprovider", "--help")
    text = " ".join(result.stdout.str().split())
    for shown in [
        "--expiry-leaks=MODE processes a test leaves running after its teardown: warn (report "
        "them and touch nothing; the default), kill (report and end them: SIGTERM, grace, "
        "SIGKILL), fail (end them and error the test), off.",
        "--expiry-child-stacks=MODE how the watchdog gets the stacks of the Python processes "
        "a test started: auto (an external unwinder, py-spy, when one is available, else none; "
        "nothing is added to the children; the default), hook (",
        "expiry_child_stacks (string):",
        "expiry_func_only (bool):",
        "expiry_timeout_compat (bool):",
        "--expiry=SECONDS deadline of every test (setup, call and teardown together); 0 "
        "disables; otherwise 0.001 to 10000000.",
    ]:
        assert shown in text


@pytest.mark.parametrize("mode", ["auto", "hook", "off"])
def test_every_child_stacks_mode_is_accepted_by_a_real_run(
    pytester: pytest.Pytester, run_pytest: RunPytest, mode: str
) -> None:
    write_test(pytester, HANG, ["@pytest.mark.expires(0.3)"])
    assert_expired(run_pytest(f"--expiry-child-stacks={mode}"))
