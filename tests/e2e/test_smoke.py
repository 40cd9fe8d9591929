"""The plugin's basic promise, end to end: a hung test fails with Expired, the next runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.helpers import RunPytest


def test_a_sleeping_test_expires_and_the_session_goes_on(
    pytester: pytest.Pytester, run_pytest: RunPytest
) -> None:
    pytester.makepyfile(
        """
        import time

        def test_hangs():
            time.sleep(60)

        def test_after():
            pass
        """
    )
    run = run_pytest("--expiry=0.5")
    run.result.assert_outcomes(failed=1, passed=1)
    failure = run.testcase("test_hangs").find("failure")
    assert failure is not None and "Expired: still running" in failure.get("message", "")
    assert "in test_hangs" in run.output
    assert float(run.testcase("test_hangs").get("time", "nan")) < 0.5 + 1.0
