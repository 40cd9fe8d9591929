"""The generated test suites, as ``{file name: source}``. Each has its own ``pytest.ini`` (the
repository's configuration is never read); the hanging ones get a conftest that appends
``{nodeid, what, t}`` lines (``t``: the monotonic clock the bench shares) to ``$BENCH_TIMES``
when a test starts and when each of its reports is made."""

from __future__ import annotations

import shutil
from pathlib import Path

Files = dict[str, str]
TIMES_ENV, FIFO_ENV, NOTE_ENV = "BENCH_TIMES", "BENCH_FIFO", "BENCH_NOTE"
CONFTEST = """\
import json, os, time

def _note(nodeid, what):
    if os.environ.get("BENCH_TIMES"):
        with open(os.environ["BENCH_TIMES"], "a") as out:
            out.write(json.dumps({"nodeid": nodeid, "what": what, "t": time.monotonic()}) + "\\n")
def pytest_runtest_logstart(nodeid, location):
    _note(nodeid, "start")  # just after pytest-expiry armed the test's deadline
def pytest_runtest_logreport(report):
    _note(report.nodeid, report.when + ":" + report.outcome)
"""


def write(directory: Path, files: Files) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for name, text in {"pytest.ini": "[pytest]\n", **files}.items():
        (directory / name).write_text(text)
    return directory


def trivial(size: int) -> Files:
    """``size`` tests that pass at once, 100 to a module."""
    body = "def test_{}():\n    pass\n\n\n"
    return {
        f"test_trivial_{m // 100:03d}.py": "".join(map(body.format, range(min(100, size - m))))
        for m in range(0, size, 100)
    }


_WORKER_CONFTEST = """\
import os, resource

_noted = []
def pytest_runtest_logstart(nodeid, location):
    # an xdist worker's CPU from its start to its first test: its start-up, this plugin's too
    if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("BENCH_NOTE") and not _noted:
        _noted.append(nodeid)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with open(os.environ["BENCH_NOTE"], "a") as out:
            out.write(f"{usage.ru_utime + usage.ru_stime}\\n")
"""


def workers(size: int) -> Files:
    """:func:`trivial`, with a conftest by which each xdist worker appends the CPU it used
    up to its first test to ``$BENCH_NOTE``."""
    return {**trivial(size), "conftest.py": _WORKER_CONFTEST}


_REAL = """\
import json, subprocess, sys
import pytest

@pytest.fixture(scope="module")
def table():
    return {str(i): i * i for i in range(200)}
@pytest.fixture
def record(tmp_path, table):
    (path := tmp_path / "record.json").write_text(json.dumps(table))
    yield path
    path.unlink()

@pytest.mark.parametrize("n", range(34))
def test_lookup(table, n):
    assert table[str(n)] == n * n

class TestRecord:
    @pytest.fixture(autouse=True)
    def loaded(self, record):
        self.data = json.loads(record.read_text())

    @pytest.mark.parametrize("key", ["1", "7", "42"])
    def test_key(self, key):
        assert self.data[key] == int(key) ** 2

    def test_sorted(self):
        assert sorted(self.data, key=int)[:3] == ["0", "1", "2"]

@pytest.mark.parametrize("code", [0, 1])
def test_subprocess(code):
    assert subprocess.run([sys.executable, "-c", f"exit({code})"]).returncode == code
"""


def realworld(size: int) -> Files:
    """Modules of 40 tests (34 + 3 + 1 + 2): module and function fixtures (tmp_path, a yield
    fixture, an autouse one), parametrization, a class; 2 of 40 (5 %) run a subprocess."""
    return {f"test_real_{m:03d}.py": _REAL for m in range(max(1, size // 40))}


def hangs(repeats: int) -> Files:
    """A sleep, a join of a hung child process and a pure-Python loop, ``repeats`` each."""
    test = f"""\
import multiprocessing, time
import pytest

@pytest.mark.parametrize("kind", ["sleep", "hung-child", "python-loop"] * {repeats})
def test_hang(kind):
    if kind == "sleep":
        time.sleep(3600)
    elif kind == "hung-child":
        child = multiprocessing.Process(target=time.sleep, args=(3600,))
        child.start()
        child.join()
    while True:
        pass
"""
    return {"conftest.py": CONFTEST, "test_hangs.py": test}


def gil(_: int) -> Files:
    """C code that holds the GIL and never checks for signals: only a kill ends it."""
    return {"conftest.py": CONFTEST, "test_gil.py": "def test_gil():\n    sum(range(10**15))\n"}


_HANG = """\
import os, subprocess, sys, time

fifo = os.open(os.environ["BENCH_FIFO"], os.O_WRONLY)  # the bench sees EOF once all are dead
os.write(fifo, b"%d\\n" % os.getpid())
kids = [subprocess.Popen([sys.executable, __file__, "0"]) for _ in range(int(sys.argv[1]))]
time.sleep(3600)
"""


def tree(children: int, grandchildren: int = 4) -> Files:
    """A test that starts ``children`` hung processes with ``grandchildren`` each, then hangs."""
    test = f"""\
import subprocess, sys, time
from pathlib import Path

def test_tree():
    hang = str(Path(__file__).with_name("hang.py"))
    kids = [subprocess.Popen([sys.executable, hang, "{grandchildren}"]) for _ in range({children})]
    while True:
        time.sleep(1)
"""
    return {"conftest.py": CONFTEST, "test_tree.py": test, "hang.py": _HANG}


def idle(seconds: int) -> Files:
    test = f"import time\n\ndef test_idle():\n    time.sleep({seconds})\n"
    return {"conftest.py": CONFTEST, "test_idle.py": test}
