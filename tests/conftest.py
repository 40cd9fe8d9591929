"""Shared fixtures: run pytest for real, and prove afterwards that nothing was left running.

Every inner pytest run gets a unique ``EXPIRY_TEST_TAG`` in its environment; every process it
starts inherits it (unless a test clears the environment), so leftovers are found even after
they were orphaned and reparented to init, which ``children(recursive=True)`` cannot see.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

try:
    from tests.helpers import NO_EXTRAS, TAG, Run, RunPytest, assert_none_left
except ImportError:  # run by a pytest whose sys.path lacks the repository root
    from helpers import (  # type: ignore[no-redef,import-not-found]
        NO_EXTRAS,
        TAG,
        Run,
        RunPytest,
        assert_none_left,
    )


@pytest.fixture
def run_pytest(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPytest]:
    """``run_pytest(*args, junit=True)`` runs pytest in a subprocess in the pytester
    directory and checks, after the test, that none of its processes are left."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)
    for variable in ("PYTEST_EXPIRY", "PYTEST_TIMEOUT", "PYTEST_XDIST_AUTO_NUM_WORKERS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(NO_EXTRAS))

    def run(*args: str, junit: bool = True, timeout: float = 120) -> Run:
        extra = ["-p", "no:cacheprovider"]
        junit_path = pytester.path / f"junit-{uuid.uuid4().hex}.xml"
        if junit:
            extra.append(f"--junitxml={junit_path}")
        start = time.monotonic()
        result = pytester.runpytest_subprocess(*extra, *args, timeout=timeout)
        seconds = time.monotonic() - start
        tree = ET.parse(junit_path).getroot() if junit and junit_path.exists() else None
        return Run(result, seconds, tree)

    yield run
    assert_none_left(tag)
