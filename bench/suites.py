"""The test suites the bench generates, as ``{file name: source}`` dictionaries.

Every suite has its own ``pytest.ini`` (so pytest takes the suite's directory as its rootdir
and never reads the repository's configuration). The suites that time hangs get a conftest
that appends, for every test, when it started and when each of its reports was made, on the
monotonic clock the plugin and the bench share, to the file named by ``BENCH_TIMES``.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

__all__ = [
    "TIMES_ENV",
    "gil",
    "hangs",
    "idle",
    "one",
    "tree",
    "trivial",
    "write",
]

TIMES_ENV = "BENCH_TIMES"
PIDS_ENV = "BENCH_PIDS"

_INI = "[pytest]\n"

_TIMES_CONFTEST = textwrap.dedent(
    """\
    import json
    import os
    import time


    def _note(nodeid, what, outcome=None):
        now = time.monotonic()
        path = os.environ.get("BENCH_TIMES")
        if not path:
            return
        line = json.dumps({"nodeid": nodeid, "what": what, "outcome": outcome, "t": now})
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    def pytest_runtest_logstart(nodeid, location):
        # runs just after pytest-expiry armed the test's scope (its protocol wrapper is
        # tryfirst), so start + deadline is the moment the deadline passes
        _note(nodeid, "start")


    def pytest_runtest_logreport(report):
        _note(report.nodeid, report.when, report.outcome)
    """
)


def write(directory: Path, files: dict[str, str]) -> Path:
    """Replace ``directory`` by a suite made of ``files``."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name, text in {"pytest.ini": _INI, **files}.items():
        (directory / name).write_text(text)
    return directory


def trivial(tests: int, per_module: int = 100) -> dict[str, str]:
    """``tests`` tests that pass at once, ``per_module`` to a module."""
    files = {}
    for module in range(0, tests, per_module):
        count = min(per_module, tests - module)
        body = "".join(f"def test_{i}():\n    pass\n\n\n" for i in range(count))
        files[f"test_trivial_{module // per_module:03d}.py"] = body.rstrip() + "\n"
    return files


def one() -> dict[str, str]:
    return {"test_one.py": "def test_one():\n    pass\n"}


def hangs(repeats: int) -> dict[str, str]:
    """A sleeping test, a test joining a hung child process and a pure-Python loop,
    interleaved, ``repeats`` of each."""
    test = textwrap.dedent(
        f"""\
        import multiprocessing
        import time

        import pytest

        KINDS = ("sleep", "hung-child", "python-loop")


        @pytest.mark.parametrize(
            "kind", [kind for _ in range({repeats}) for kind in KINDS]
        )
        def test_hang(kind):
            if kind == "sleep":
                time.sleep(3600)
            elif kind == "hung-child":
                child = multiprocessing.Process(target=time.sleep, args=(3600,))
                child.start()
                child.join()
            else:
                while True:
                    pass
        """
    )
    return {"conftest.py": _TIMES_CONFTEST, "test_hangs.py": test}


def gil() -> dict[str, str]:
    """One test that holds the GIL in C code that never checks for signals."""
    test = textwrap.dedent(
        """\
        def test_gil_held_c_loop():
            # builtin sum() over a range runs in C and never returns to the eval loop, so
            # no Python signal handler (and no Expired) can run: only a kill ends it
            sum(range(10**15))
        """
    )
    return {"conftest.py": _TIMES_CONFTEST, "test_gil.py": test}


_HANG = textwrap.dedent(
    """\
    # One hung descendant: hang.py LEVEL IGNORE_SIGTERM READY_FILE FANOUT
    import os
    import signal
    import subprocess
    import sys
    import time

    level, ignore, ready, fanout = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    if ignore == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kids = []
    if level > 0:
        for _ in range(fanout):
            command = [sys.executable, __file__, str(level - 1), ignore, ready, "0"]
            kids.append(subprocess.Popen(command))
    fd = os.open(ready, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{os.getpid()}\\n".encode())
    os.close(fd)
    time.sleep(3600)
    """
)


def tree(repeats: int, children: int, grandchildren: int) -> dict[str, str]:
    """A test that starts ``children`` processes with ``grandchildren`` each, all hung, and
    then hangs itself; once all are up it writes their pids where the bench looks."""
    total = children * (1 + grandchildren)
    test = textwrap.dedent(
        f"""\
        import json
        import os
        import subprocess
        import sys
        import time
        from pathlib import Path

        import pytest

        HANG = Path(__file__).with_name("hang.py")
        VARIANTS = ("obeys-sigterm", "ignores-sigterm")


        @pytest.mark.parametrize(
            "variant", [v for _ in range({repeats}) for v in VARIANTS]
        )
        def test_tree(variant, request, tmp_path):
            ignore = "1" if variant == "ignores-sigterm" else "0"
            ready = tmp_path / "ready"
            ready.touch()
            command = [sys.executable, str(HANG), "1", ignore, str(ready), "{grandchildren}"]
            children = [subprocess.Popen(command) for _ in range({children})]
            give_up = time.monotonic() + 30
            while len(pids := ready.read_text().split()) < {total}:
                if time.monotonic() > give_up:
                    pytest.fail(f"only {{len(pids)}} of {total} descendants started")
                time.sleep(0.01)
            record = {{"nodeid": request.node.nodeid, "pids": [int(p) for p in pids],
                      "children": [c.pid for c in children], "t": time.monotonic()}}
            out = Path(os.environ["{PIDS_ENV}"]) / f"{{len(os.listdir(os.environ['{PIDS_ENV}']))}}"
            out.with_suffix(".tmp").write_text(json.dumps(record))
            out.with_suffix(".tmp").rename(out.with_suffix(".json"))
            while True:
                time.sleep(1)
        """
    )
    return {"conftest.py": _TIMES_CONFTEST, "test_tree.py": test, "hang.py": _HANG}


def idle(seconds: float) -> dict[str, str]:
    test = f"import time\n\n\ndef test_idle():\n    time.sleep({seconds!r})\n"
    return {"conftest.py": _TIMES_CONFTEST, "test_idle.py": test}
