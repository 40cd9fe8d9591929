"""Options, ini values, environment variables and markers, end to end (README: Options).

Every test runs pytest in a subprocess on a small test file and checks what a user would see:
whether the inner test expired or passed, the session header, the exit code and the message
of a usage error.

Deadlines are short (0.3 s); a test meant to expire hangs for 30 s, so it can only end by
expiring; a test meant to pass sleeps 0.6-0.8 s, well past the 0.3 s deadline it escapes
and well inside the one it gets.
"""

from __future__ import annotations

import re

import pytest

HANG = 30.0
"""How long a test meant to expire sleeps: it can only end by expiring."""

STRICT = 0.3
"""A deadline the inner test cannot meet."""

LOOSE = 5.0
"""A deadline the inner test meets with ease."""


def write_test(pytester, sleep, decorators=(), name="test_sleeps"):
    """A test module with one test that sleeps ``sleep`` seconds under ``decorators``."""
    lines = ["import time", "import pytest", "", *decorators, f"def {name}():"]
    lines.append(f"    time.sleep({sleep})")
    pytester.makepyfile("\n".join(lines) + "\n")


def ini(pytester, **values):
    body = "".join(f"{key} = {value}\n" for key, value in values.items())
    pytester.makeini("[pytest]\n" + body)


def assert_expired(run, name="test_sleeps"):
    run.result.assert_outcomes(failed=1)
    assert f"{name} expired" in run.output
    assert "pytest_expiry.Expired" in run.output


def assert_passed(run):
    run.result.assert_outcomes(passed=1)
    assert "Expired" not in run.output


def assert_clean_usage_error(run, *names):
    """Exit code 4, a message naming every one of ``names``, and nothing of the plugin's
    insides: no INTERNALERROR, no traceback."""
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR, run.output
    for name in names:
        assert name in run.output
    assert "INTERNALERROR" not in run.output
    assert "Traceback" not in run.output
    assert "pytest_expiry/" not in run.output


# --- where the default deadline comes from ----------------------------------------------


def test_the_expiry_option_gives_every_test_a_deadline(pytester, run_pytest):
    write_test(pytester, HANG)
    assert_expired(run_pytest(f"--expiry={STRICT}"))


def test_the_expiry_ini_value_gives_every_test_a_deadline(pytester, run_pytest):
    write_test(pytester, HANG)
    ini(pytester, expiry=STRICT)
    assert_expired(run_pytest())


def test_the_pytest_expiry_environment_variable_gives_every_test_a_deadline(
    pytester, run_pytest, monkeypatch
):
    write_test(pytester, HANG)
    monkeypatch.setenv("PYTEST_EXPIRY", str(STRICT))
    assert_expired(run_pytest())


def test_without_any_setting_a_test_has_no_deadline(pytester, run_pytest):
    write_test(pytester, 0.6)
    assert_passed(run_pytest())


# --- precedence -------------------------------------------------------------------------


def apply(pytester, monkeypatch, source, value):
    """Set the deadline ``value`` through ``source``; return (decorators, arguments)."""
    if source == "expires marker":
        return [f"@pytest.mark.expires({value})"], []
    if source == "timeout marker":
        return [f"@pytest.mark.timeout({value})"], []
    if source == "--expiry":
        return [], [f"--expiry={value}"]
    if source == "PYTEST_EXPIRY":
        monkeypatch.setenv("PYTEST_EXPIRY", str(value))
        return [], []
    assert source == "ini expiry"
    ini(pytester, expiry=value)
    return [], []


PRECEDENCE = [
    ("expires marker", "--expiry"),
    ("--expiry", "PYTEST_EXPIRY"),
    ("PYTEST_EXPIRY", "ini expiry"),
    ("expires marker", "timeout marker"),
    ("timeout marker", "--expiry"),
]


@pytest.mark.parametrize(("higher", "lower"), PRECEDENCE, ids=" over ".join)
def test_a_looser_deadline_from_the_higher_source_overrides_a_stricter_lower_one(
    pytester, run_pytest, monkeypatch, higher, lower
):
    decorators, arguments = apply(pytester, monkeypatch, higher, LOOSE)
    more_decorators, more_arguments = apply(pytester, monkeypatch, lower, STRICT)
    write_test(pytester, 0.6, decorators + more_decorators)
    assert_passed(run_pytest(*arguments, *more_arguments))


@pytest.mark.parametrize(("higher", "lower"), PRECEDENCE, ids=" over ".join)
def test_a_stricter_deadline_from_the_higher_source_overrides_a_looser_lower_one(
    pytester, run_pytest, monkeypatch, higher, lower
):
    decorators, arguments = apply(pytester, monkeypatch, higher, STRICT)
    more_decorators, more_arguments = apply(pytester, monkeypatch, lower, 60)
    write_test(pytester, HANG, decorators + more_decorators)
    assert_expired(run_pytest(*arguments, *more_arguments))


def test_expiry_zero_on_the_command_line_disables_a_deadline_from_the_ini_file(
    pytester, run_pytest
):
    write_test(pytester, 0.6)
    ini(pytester, expiry=STRICT)
    assert_passed(run_pytest("--expiry=0"))


def test_an_expires_zero_marker_disables_the_deadline_of_its_test(pytester, run_pytest):
    write_test(pytester, 0.6, ["@pytest.mark.expires(0)"])
    assert_passed(run_pytest(f"--expiry={STRICT}"))


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
def test_an_expires_marker_gives_a_deadline_at_any_level(pytester, run_pytest, level):
    pytester.makepyfile(LEVELS[level])
    assert_expired(run_pytest())


def test_the_closest_expires_marker_wins(pytester, run_pytest):
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


def test_the_expires_marker_is_documented_in_pytest_markers(run_pytest):
    run = run_pytest("--markers", junit=False)
    run.result.stdout.fnmatch_lines(["@pytest.mark.expires(seconds, *, func_only=False):*"])


def test_the_timeout_marker_is_documented_in_pytest_markers_while_honoured(run_pytest):
    run = run_pytest("--markers", junit=False)
    run.result.stdout.fnmatch_lines(["@pytest.mark.timeout(timeout, *, func_only=False):*"])


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
def test_with_func_only_slow_fixture_setup_and_teardown_do_not_count(pytester, run_pytest, how):
    decorator, arguments = FUNC_ONLY[how]
    pytester.makepyfile(SLOW_FIXTURE.format(decorator=decorator))
    run = run_pytest(*arguments)
    run.result.assert_outcomes(passed=1)
    assert "Expired" not in run.output


@pytest.mark.parametrize("how", FUNC_ONLY)
def test_with_func_only_a_hang_in_the_test_function_still_expires(pytester, run_pytest, how):
    decorator, arguments = FUNC_ONLY[how]
    pytester.makepyfile(HANG_IN_FUNCTION.format(decorator=decorator))
    assert_expired(run_pytest(*arguments), "test_hangs")


def test_without_func_only_a_slow_fixture_setup_counts(pytester, run_pytest):
    pytester.makepyfile(SLOW_FIXTURE.format(decorator=""))
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(errors=1)
    assert "test_with_slow_fixture expired: still running in setup" in run.output


# --- scale ------------------------------------------------------------------------------


def test_expiry_scale_multiplies_the_deadline(pytester, run_pytest):
    write_test(pytester, 0.6, ["@pytest.mark.expires(0.3)"])
    assert_passed(run_pytest("--expiry-scale=3"))


def test_without_expiry_scale_the_same_test_expires(pytester, run_pytest):
    write_test(pytester, 0.6, ["@pytest.mark.expires(0.3)"])
    assert_expired(run_pytest())


# --- pytest-timeout's spellings (pytest-timeout is not installed) -----------------------


def timeout_source(pytester, monkeypatch, source, value):
    """Set a deadline through one of pytest-timeout's spellings; return (decorators, args)."""
    if source == "@pytest.mark.timeout":
        return [f"@pytest.mark.timeout({value})"], []
    if source == "--timeout":
        return [], [f"--timeout={value}"]
    if source == "PYTEST_TIMEOUT":
        monkeypatch.setenv("PYTEST_TIMEOUT", str(value))
        return [], []
    assert source == "ini timeout"
    ini(pytester, timeout=value)
    return [], []


TIMEOUT_SPELLINGS = ["@pytest.mark.timeout", "--timeout", "PYTEST_TIMEOUT", "ini timeout"]


def test_pytest_timeout_is_not_installed_here():
    """The premise of the compatibility tests below."""
    from pytest_expiry.settings import timeout_compat_possible  # noqa: PLC0415

    assert timeout_compat_possible()


@pytest.mark.parametrize("source", TIMEOUT_SPELLINGS)
def test_pytest_timeout_spellings_give_a_deadline(pytester, run_pytest, monkeypatch, source):
    decorators, arguments = timeout_source(pytester, monkeypatch, source, STRICT)
    write_test(pytester, HANG, decorators)
    assert_expired(run_pytest(*arguments))


@pytest.mark.parametrize("source", TIMEOUT_SPELLINGS)
def test_expiry_no_timeout_compat_ignores_pytest_timeout_spellings(
    pytester, run_pytest, monkeypatch, source
):
    decorators, arguments = timeout_source(pytester, monkeypatch, source, STRICT)
    write_test(pytester, 0.6, decorators)
    assert_passed(run_pytest("--expiry-no-timeout-compat", *arguments))


# --- the session header -----------------------------------------------------------------


def header_line(run):
    lines = [line for line in run.result.stdout.lines if line.startswith("expiry: ")]
    assert len(lines) == 1, run.output
    return lines[0]


def test_the_header_shows_the_default_settings(pytester, run_pytest):
    pytester.makepyfile("def test_nothing(): pass\n")
    line = header_line(run_pytest())
    assert line == (
        "expiry: none by default (markers only) "
        "(scale 1, grace 2 s, slow at 50%, pytest-timeout markers honoured)"
    )


def test_the_header_shows_the_settings_given_on_the_command_line(pytester, run_pytest):
    pytester.makepyfile("def test_nothing(): pass\n")
    run = run_pytest(
        "--expiry=2", "--expiry-scale=3", "--expiry-grace=1", "--expiry-slow=0.25",
        "--expiry-func-only", "--expiry-no-timeout-compat",
    )  # fmt: skip
    assert header_line(run) == "expiry: 2 s per test (scale 3, grace 1 s, slow at 25%, func_only)"


def test_the_header_shows_the_settings_given_in_the_ini_file(pytester, run_pytest):
    pytester.makepyfile("def test_nothing(): pass\n")
    ini(
        pytester, expiry=2, expiry_scale=3, expiry_grace=1, expiry_slow=0,
        expiry_func_only="true", expiry_timeout_compat="false",
    )  # fmt: skip
    line = header_line(run_pytest())
    assert line == "expiry: 2 s per test (scale 3, grace 1 s, no SLOW notices, func_only)"


# --- SLOW notices -----------------------------------------------------------------------


def test_a_test_past_the_slow_fraction_is_named_while_it_runs_and_in_the_summary(
    pytester, run_pytest
):
    write_test(pytester, 0.6)
    run = run_pytest("--expiry=1", "--expiry-slow=0.3")
    run.result.assert_outcomes(passed=1)
    live = re.search(
        r"pytest-expiry: SLOW (\S+) is still running; it expires in [\d.]+ s", run.output
    )
    assert live is not None, run.output
    assert live.group(1).endswith(".py::test_sleeps")
    run.result.stdout.re_match_lines([r"SLOW \S+::test_sleeps: 0\.\d\d s of its 1 s deadline"])


def test_expiry_slow_zero_turns_slow_notices_off(pytester, run_pytest):
    write_test(pytester, 0.6)
    run = run_pytest("--expiry=1", "--expiry-slow=0")
    run.result.assert_outcomes(passed=1)
    assert "pytest-expiry: SLOW" not in run.output
    assert not re.search(r"^SLOW ", run.output, re.MULTILINE)


# --- bad input --------------------------------------------------------------------------

SECONDS = "a number of seconds >= 0 (0 disables)"
SECONDS_ALLOWED = f"is not {SECONDS}"
BAD_OPTIONS = [
    *[("--expiry", value, SECONDS_ALLOWED) for value in ["abc", "-1", "nan", "inf", ""]],
    *[("--expiry-grace", value, SECONDS_ALLOWED) for value in ["abc", "-1", "nan", "inf", ""]],
    *[("--expiry-scale", v, "is not a number > 0") for v in ["abc", "0", "-1", "nan", "inf", ""]],
    *[
        ("--expiry-slow", value, "is not a fraction of the deadline")
        for value in ["abc", "-0.1", "1.0", "2", "nan", "inf", ""]
    ],
    ("--timeout", "abc", SECONDS_ALLOWED),
]


@pytest.mark.parametrize(
    ("option", "value", "allowed"), BAD_OPTIONS, ids=[f"{o}={v}" for o, v, _ in BAD_OPTIONS]
)
def test_a_bad_option_value_is_a_usage_error_naming_it(
    pytester, run_pytest, option, value, allowed
):
    pytester.makepyfile("def test_nothing(): pass\n")
    run = run_pytest(f"{option}={value}", junit=False)
    assert_clean_usage_error(run, option, repr(value), allowed)


BAD_INI = [
    ("expiry", "abc", SECONDS_ALLOWED),
    ("expiry", "-1", SECONDS_ALLOWED),
    ("expiry_grace", "nan", SECONDS_ALLOWED),
    ("expiry_scale", "0", "is not a number > 0"),
    ("expiry_slow", "1", "is not a fraction of the deadline"),
    ("expiry_func_only", "maybe", "expected true or false"),
    ("expiry_timeout_compat", "maybe", "expected true or false"),
    ("timeout", "inf", SECONDS_ALLOWED),
]


@pytest.mark.parametrize(
    ("name", "value", "allowed"), BAD_INI, ids=[f"{n} = {v}" for n, v, _ in BAD_INI]
)
def test_a_bad_ini_value_is_a_usage_error_naming_it(pytester, run_pytest, name, value, allowed):
    pytester.makepyfile("def test_nothing(): pass\n")
    ini(pytester, **{name: value})
    run = run_pytest(junit=False)
    assert_clean_usage_error(run, f"ini option {name} = {value}", allowed)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("PYTEST_EXPIRY", "abc"), ("PYTEST_EXPIRY", "-1"), ("PYTEST_TIMEOUT", "nan")],
)
def test_a_bad_environment_variable_is_a_usage_error_naming_it(
    pytester, run_pytest, monkeypatch, variable, value
):
    pytester.makepyfile("def test_nothing(): pass\n")
    monkeypatch.setenv(variable, value)
    run = run_pytest(junit=False)
    assert_clean_usage_error(run, f"environment variable {variable} = {value}", SECONDS_ALLOWED)


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
]


@pytest.mark.parametrize(
    ("marker", "shown", "allowed"), BAD_MARKERS, ids=[m for m, _, _ in BAD_MARKERS]
)
def test_a_marker_with_bad_arguments_is_a_usage_error_naming_it(
    pytester, run_pytest, marker, shown, allowed
):
    write_test(pytester, 0, [f"@pytest.mark.{marker}"], name="test_marked")
    run = run_pytest(junit=False)
    name = marker.split("(")[0]
    assert_clean_usage_error(
        run, "invalid expiry markers", "::test_marked", f"@pytest.mark.{name}", shown, allowed
    )
    assert "1 passed" not in run.output


@pytest.mark.xfail(
    reason="plugin bug: under xdist the worker's UsageError from collection_modifyitems "
    "becomes INTERNALERROR (xdist asserts on the crash item), exit code 3, message lost",
    strict=True,
)
def test_a_marker_with_bad_arguments_under_xdist_is_a_clear_error(pytester, run_pytest):
    write_test(pytester, 0, ['@pytest.mark.expires("10s")'], name="test_marked")
    run = run_pytest("-n", "2", junit=False)
    assert "INTERNALERROR" not in run.output
    assert "@pytest.mark.expires('10s')" in run.output
    assert run.result.ret == pytest.ExitCode.USAGE_ERROR
