"""Learned deadlines in a session: ``--expiry-learn``, ``--expiry-learn-min``,
``--expiry-history``.

Who does what:

* the session's process (plain pytest, or the xdist controller) owns the history file:
  :class:`HistoryKeeper` reads it at start-up, gathers the passing durations the reports
  bring (``report.expiry_duration``, which reaches the xdist controller with the report),
  and writes the merged history once, at the end of the session;
* the process that runs tests (plain pytest, or each xdist worker, which gets the history
  from its controller in ``workerinput``) resolves each test's deadline with
  :func:`resolve_deadline`, and :class:`DurationProbe` puts a passing test's duration on its
  teardown report: setup, call and teardown together, or the call alone for a ``func_only``
  test (its deadline covers the call alone).

The history is read from, and written to, ``--expiry-history`` if given, else pytest's cache
(``.pytest_cache/d/expiry/history.json``); with the cache disabled (``-p no:cacheprovider``)
and no path given, nothing is read or written. Durations are recorded while learning is on or
a history path is given; a test that fails, errors, is skipped or expires records nothing.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expiry.settings import Settings, configured_source, item_deadline

if TYPE_CHECKING:
    from pytest_expiry.history import Learned
    from pytest_expiry.record import Record

__all__ = [
    "LEARNED",
    "WORKER_KEY",
    "DurationProbe",
    "HistoryKeeper",
    "Learning",
    "deadline_source",
    "install",
    "resolve_deadline",
    "session_learning",
]

WORKER_KEY = "expiry_history"
"""The ``workerinput`` key under which a controller sends its workers the history."""
LEARNED = pytest.StashKey["Learned"]()
"""On an item whose deadline was learned: how."""
_CALL_ONLY = pytest.StashKey[bool]()
_SPENT = pytest.StashKey[list[float]]()  # [seconds so far, whether the call phase passed]


class Learning:
    """The learned deadlines of one process that runs tests: ``durations`` is the history,
    ``record`` whether passing durations are recorded."""

    def __init__(self, settings: Settings, durations: dict[str, list[float]], record: bool):
        self.factor = settings.learn
        self.floor = settings.learn_min
        self.durations = durations
        self.record = record

    def learn(self, nodeid: str, seconds: float) -> Learned | None:
        """The learned deadline of ``nodeid`` if it is shorter than ``seconds`` (its deadline
        without learning); ``None`` when learning is off, the test has no deadline to
        shorten (0) or no history, or the learned one would not be shorter."""
        if not self.factor or not seconds:
            return None
        from pytest_expiry.history import learned_deadline  # noqa: PLC0415 - when learning

        learned = learned_deadline(self.durations.get(nodeid, ()), self.factor, self.floor)
        return learned if learned is not None and learned.seconds < seconds else None


_LEARNING = pytest.StashKey[Learning]()


def session_learning(config: pytest.Config) -> Learning | None:
    """The session's :class:`Learning`, if learning or a history is on (:func:`install`)."""
    return config.stash.get(_LEARNING, None)


def resolve_deadline(
    item: pytest.Item,
    settings: Settings,
    seen: dict[int, dict[str, pytest.Mark]],
    learning: Learning | None,
) -> tuple[float, bool]:
    """``(seconds, func_only)`` for ``item``: :func:`~pytest_expiry.settings.item_deadline`'s
    (markers, options, environment, ini, scaled), shortened to the learned deadline when
    ``learning`` (:func:`session_learning`) is on and the test's history teaches a shorter one
    (then ``item.stash[LEARNED]`` says how). Raises ``MarkerError`` as ``item_deadline``
    does."""
    seconds, func_only = item_deadline(item, settings, seen)
    if learning is None:
        return seconds, func_only
    if func_only and learning.record:
        item.stash[_CALL_ONLY] = True
    learned = learning.learn(item.nodeid, seconds)
    if learned is None:
        return seconds, func_only
    item.stash[LEARNED] = learned
    return learned.seconds, func_only


def deadline_source(owner: object, seconds: float, settings: Settings) -> Record:
    """What an expiry record says of its deadline of ``seconds``: ``deadline_source``
    (``learned``, ``marker``, ``option``, ``env``, ``ini``, ``session`` when the session's
    budget cut it short, ``collect`` for a module's import) and, for a learned one,
    ``learned`` (its numbers). ``owner`` is what the scope was armed for (the item)."""
    if not isinstance(owner, pytest.Item):
        return {"deadline_source": "collect"}
    learned = owner.stash.get(LEARNED, None)
    planned = learned.seconds if learned is not None else item_deadline(owner, settings)[0]
    if seconds < planned * (1 - 1e-9):
        return {"deadline_source": "session"}
    if learned is not None:
        return {"deadline_source": "learned", "learned": learned.as_json()}
    return {"deadline_source": configured_source(owner, settings)}


class DurationProbe:
    """In the process that runs tests: a passing test's duration on its teardown report,
    as ``report.expiry_duration`` (seconds)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        spent = [0.0, 0.0] if report.when == "setup" else item.stash.get(_SPENT, [math.nan, 0])
        if not report.passed:
            spent[0] = math.nan
        elif report.when == "call":
            spent[0] = report.duration + (0 if item.stash.get(_CALL_ONLY, False) else spent[0])
            spent[1] = 1.0
        elif not item.stash.get(_CALL_ONLY, False):
            spent[0] += report.duration
        item.stash[_SPENT] = spent
        if report.when == "teardown" and spent[1] and math.isfinite(spent[0]):
            report.expiry_duration = round(spent[0], 6)  # type: ignore[attr-defined]
        return report


def _warn(config: pytest.Config, problem: str) -> None:
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"pytest-expiry: WARNING {problem}", yellow=True)
    else:
        sys.stderr.write(f"pytest-expiry: WARNING {problem}\n")


def _history_path(config: pytest.Config, settings: Settings) -> tuple[str | None, str]:
    """The history file, or ``None`` and why there is none."""
    if settings.history:
        return settings.history, ""
    cache = getattr(config, "cache", None)
    if cache is None:
        return None, "pytest's cache is disabled (-p no:cacheprovider) and no --expiry-history"
    try:
        return str(cache.mkdir("expiry") / "history.json"), ""
    except OSError as error:
        return None, f"pytest's cache cannot be written ({error}) and no --expiry-history"


class HistoryKeeper:
    """In the session's process: reads the history, gathers what the reports record, writes
    the merged history at the end, and says in the header what was learned."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self._config = config
        self._settings = settings
        self.path, self._no_path = _history_path(config, settings)
        from pytest_expiry.history import History, read_history  # noqa: PLC0415

        self.history = read_history(self.path) if self.path else History({}, None, False)
        if self.history.problem:
            _warn(config, self.history.problem)
        self.recorded: dict[str, list[float]] = {}
        self._told = False

    def header(self, learned: int, tests: int) -> str:
        """``expiry: 60 s per test; learned deadlines (x10, min 5 s) for 8 of 9 tests``."""
        s = self._settings
        flat = f"{s.default:g} s per test" if s.default else "none by default (markers only)"
        if not s.learn:
            return f"expiry: {flat}; passing durations recorded in {self.path}, none learned"
        if self.path is None:
            return f"expiry: {flat}; no deadlines learned: {self._no_path}"
        count = f"for {learned} of {tests} tests"
        if not s.default and not learned:
            count += " (learning only shortens deadlines: give one with --expiry or a marker)"
        return f"expiry: {flat}; learned deadlines (x{s.learn:g}, min {s.learn_min:g} s) {count}"

    def pytest_report_collectionfinish(self, items: list[pytest.Item]) -> str:
        return self.header(sum(1 for item in items if LEARNED in item.stash), len(items))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        record = self.path is not None and self.history.replaceable
        node.workerinput[WORKER_KEY] = {"durations": self.history.durations, "record": record}

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller sees test ids, not markers: it counts the collected
        tests that have a history (each worker shortens only deadlines it finds longer)."""
        if self._told:
            return
        self._told = True
        known = self.history.durations
        line = self.header(sum(1 for nodeid in ids if nodeid in known), len(ids))
        _write_line(self._config, line)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        seconds = getattr(report, "expiry_duration", None)
        if isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0:
            self.recorded.setdefault(report.nodeid, []).append(float(seconds))

    def pytest_sessionfinish(self) -> None:
        if not self.recorded or self.path is None or not self.history.replaceable:
            return
        from pytest_expiry.history import merge, write_history  # noqa: PLC0415

        problem = write_history(self.path, merge(self.history.durations, self.recorded))
        if problem:
            _warn(self._config, problem)


def _write_line(config: pytest.Config, line: str) -> None:
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.verbosity >= 0:
        reporter.write_line(line)


def install(config: pytest.Config, settings: Settings, workerinput: dict[str, Any] | None) -> None:
    """Set learning up for this process's role (called when ``--expiry-learn`` or
    ``--expiry-history`` is given): an xdist worker learns from what its controller sent;
    the session's process keeps the history, and learns too when it runs the tests."""
    if workerinput is not None:
        shared = workerinput.get(WORKER_KEY)
        if shared is not None:
            _install_runner(config, settings, shared["durations"], bool(shared["record"]))
        return
    keeper = HistoryKeeper(config, settings)
    config.pluginmanager.register(keeper, "expiry-history")
    if getattr(config.option, "dist", "no") == "no":
        record = keeper.path is not None and keeper.history.replaceable
        _install_runner(config, settings, keeper.history.durations, record)


def _install_runner(
    config: pytest.Config, settings: Settings, durations: dict[str, list[float]], record: bool
) -> None:
    config.stash[_LEARNING] = Learning(settings, durations, record)
    if record:
        config.pluginmanager.register(DurationProbe(), "expiry-durations")
