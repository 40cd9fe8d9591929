"""A small suite that hangs in several ways. Run it with:

    pytest examples --expiry=1

Every hung test fails with ``Expired`` within about a second, showing where it hung; the
passing tests still pass; nothing is left running.
"""

import multiprocessing
import subprocess
import sys
import threading
import time

import pytest


def test_passes():
    assert 1 + 1 == 2


def test_sleeps_forever():
    time.sleep(3600)


def test_spins_in_python():
    while True:
        pass


def test_deadlocks():
    lock = threading.Lock()
    lock.acquire()
    lock.acquire()


def _wait_forever():
    time.sleep(3600)


def test_waits_for_a_hung_child_process():
    child = multiprocessing.get_context("spawn").Process(target=_wait_forever)
    child.start()
    child.join()


def test_waits_for_a_hung_subprocess():
    subprocess.run([sys.executable, "-c", "import time; time.sleep(3600)"], check=True)


@pytest.fixture
def stuck_teardown():
    yield
    time.sleep(3600)


def test_with_a_fixture_that_hangs_in_teardown(stuck_teardown):
    pass


@pytest.mark.expires(5)
def test_is_slow_but_in_time():
    time.sleep(3)


def test_passes_too():
    pass
