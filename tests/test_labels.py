"""What each process in a report is called, from its command line, its parent's and its stack."""

from __future__ import annotations

import pytest

from pytest_expiry.labels import label_descendant, name_xdist_worker
from pytest_expiry.record import Record

PYTEST = ["python", "-m", "pytest", "tests"]
SPAWNED = ["python", "-B", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"]
FORK_SERVER = ["python", "-c", "from multiprocessing.forkserver import main; main(3, 4)"]
TRACKER = ["python", "-c", "from multiprocessing.resource_tracker import main;main(5)"]
IN_POOL = 'File "/usr/lib/python3.11/multiprocessing/pool.py", line 114 in worker'
IN_EXECUTOR = 'File "/usr/lib/concurrent/futures/process.py", line 240 in _process_worker'
IN_PROCESS = 'File "/usr/lib/python3.11/multiprocessing/process.py", line 108 in run'
IN_TEST = 'File "/src/test_x.py", line 3 in test_forks'


@pytest.mark.parametrize(
    ("cmdline", "parent", "stack", "label"),
    [
        (SPAWNED, PYTEST, IN_PROCESS, "multiprocessing child (spawn)"),
        (PYTEST, PYTEST, IN_PROCESS, "multiprocessing child (fork)"),
        (FORK_SERVER, FORK_SERVER, IN_PROCESS, "multiprocessing child (forkserver)"),
        (SPAWNED, PYTEST, IN_POOL, "Pool worker (spawn)"),
        (PYTEST, PYTEST, IN_POOL, "Pool worker (fork)"),
        (SPAWNED, PYTEST, IN_EXECUTOR, "ProcessPoolExecutor worker (spawn)"),
        (PYTEST, PYTEST, IN_TEST, "forked child"),
        (FORK_SERVER, PYTEST, None, "multiprocessing fork server"),
        (TRACKER, PYTEST, None, "multiprocessing resource tracker"),
        (["sleep", "30"], PYTEST, None, "subprocess"),
        (["python", "-c", "pass"], PYTEST, None, "subprocess"),
    ],
)
def test_a_descendant_is_labelled_by_how_it_was_started(
    cmdline: list[str], parent: list[str], stack: str | None, label: str
) -> None:
    assert label_descendant(cmdline, parent, stack) == label


def test_under_xdist_the_test_process_is_named_by_its_worker_and_nothing_else_is() -> None:
    record: Record = {
        "processes": [{"role": "test process"}, {"role": "descendant", "label": "subprocess"}]
    }
    name_xdist_worker(record, "gw3")
    assert [p["label"] for p in record["processes"]] == ["xdist worker gw3", "subprocess"]
