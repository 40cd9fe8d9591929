"""Learned deadlines: the history file and the deadline a test's history teaches.

The history is a JSON file, ``{"format": "pytest-expiry-history", "version": 1, "tests":
{nodeid: [seconds, ...]}}``: for each test id, its last :data:`KEEP` passing durations,
oldest first. Nothing here knows about pytest: :mod:`pytest_expiry.learning` decides what is
recorded, when the file is read and written, and which deadline a test runs under.

Contracts:

* :func:`read_history` never raises for what is in the file: a missing or empty file is an
  empty history; unreadable, corrupt (not JSON, or entries that are not lists of durations)
  or foreign content (JSON that is not ours, or a newer format) is an empty history plus the
  text of one warning, and :func:`write_history` will not replace it.
* :func:`write_history` is atomic: it writes a temporary file beside the history and renames
  it over the old one (``os.replace``), so a session killed at any moment leaves the old
  history or the new one, never a mix; it returns a problem's text instead of raising.
* :func:`learned_deadline` is ``max(floor, factor x longest)`` for a test with at least one
  recorded duration, and ``None`` for one without.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "FORMAT",
    "KEEP",
    "VERSION",
    "History",
    "Learned",
    "learned_deadline",
    "merge",
    "read_history",
    "write_history",
]

FORMAT = "pytest-expiry-history"
"""The ``format`` field that says a JSON file is a pytest-expiry history."""
VERSION = 1
"""The version of the file's layout this code reads and writes."""
KEEP = 5
"""How many passing durations are kept per test (the most recent ones)."""

Durations = dict[str, list[float]]


def _short(seconds: float) -> str:
    return f"{round(seconds, 3):g}"


@dataclass(frozen=True)
class Learned:
    """A deadline learned from a test's history: ``seconds`` is
    ``max(floor, factor x longest)``, where ``longest`` is the longest of ``runs`` recorded
    passing durations."""

    seconds: float
    factor: float
    longest: float
    runs: int
    floor: float

    def describe(self) -> str:
        """``learned deadline 1 s: 10 x 0.1 s, longest of 5 runs`` (and, when the floor
        decided, ``; at least --expiry-learn-min 5 s``)."""
        runs = f"{self.runs} run" if self.runs == 1 else f"{self.runs} runs"
        text = (
            f"learned deadline {_short(self.seconds)} s: {self.factor:g} x "
            f"{_short(self.longest)} s, longest of {runs}"
        )
        if self.floor > self.factor * self.longest:
            text += f"; at least --expiry-learn-min {self.floor:g} s"
        return text

    def as_json(self) -> dict[str, float | int]:
        """The numbers, for the JSON report (``learned`` of an expiry record)."""
        return {
            "factor": self.factor,
            "longest": round(self.longest, 6),
            "runs": self.runs,
            "floor": self.floor,
        }


def learned_deadline(durations: Sequence[float], factor: float, floor: float) -> Learned | None:
    """The deadline ``durations`` (a test's recorded passing durations) teach, or ``None``
    when there are none. ``factor`` (at least 1) multiplies the longest; ``floor`` is the
    least deadline learned."""
    if not durations:
        return None
    longest = max(durations)
    return Learned(max(floor, factor * longest), factor, longest, len(durations), floor)


@dataclass
class History:
    """What :func:`read_history` found: the durations (empty when ``problem`` is set),
    and whether the file may be replaced (it is absent, empty, or ours)."""

    durations: Durations
    problem: str | None = None
    replaceable: bool = True


def _valid_duration(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _durations_of(document: object) -> tuple[Durations | None, str]:
    """The durations in a parsed file, or ``None`` and why it is not a history of ours."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return None, f'not a pytest-expiry history (no "format": "{FORMAT}")'
    version = document.get("version")
    if version != VERSION:
        return None, f"format version {version!r}, this pytest-expiry reads version {VERSION}"
    tests = document.get("tests")
    if not isinstance(tests, dict):
        return None, 'corrupt: "tests" is not an object'
    for nodeid, values in tests.items():
        if not isinstance(values, list) or not all(_valid_duration(v) for v in values):
            shown = nodeid if len(nodeid) <= 80 else nodeid[:77] + "..."
            return None, f"corrupt: the entry of {shown!r} is not a list of durations"
    return {nodeid: [float(v) for v in values[-KEEP:]] for nodeid, values in tests.items()}, ""


def read_history(path: str) -> History:
    """The history in ``path``; never raises for the file's content (see the module's
    contracts). A problem's text names the file, what is wrong and what to do."""
    try:
        with open(path, encoding="utf-8") as source:
            text = source.read()
    except FileNotFoundError:
        return History({})
    except (OSError, UnicodeDecodeError) as error:
        return History({}, f"cannot read the deadline history {path}: {error}", False)
    if not text.strip():
        return History({})
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as error:
        return _unusable(path, f"corrupt: not JSON ({error})")
    durations, why = _durations_of(document)
    if durations is None:
        return _unusable(path, why)
    return History(durations)


def _unusable(path: str, why: str) -> History:
    return History(
        {},
        f"the deadline history {path} is ignored: {why}; no deadline is learned from it and "
        "it is left as it is (delete it to start a new history, or give --expiry-history "
        "another path)",
        replaceable=False,
    )


def merge(old: Mapping[str, Sequence[float]], new: Mapping[str, Iterable[float]]) -> Durations:
    """``old`` with each test's ``new`` durations appended, the last :data:`KEEP` of each
    kept; tests only in ``old`` keep their history."""
    merged = {nodeid: list(values) for nodeid, values in old.items()}
    for nodeid, values in new.items():
        merged[nodeid] = [*merged.get(nodeid, []), *values][-KEEP:]
    return merged


def _mode_of(path: str) -> int:
    """The permissions the new file gets: the old file's, else ``rw-r--r--``."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o644


def write_history(path: str, durations: Mapping[str, Sequence[float]]) -> str | None:
    """Replace ``path`` atomically with ``durations`` (creating its directory); ``None``
    when written, else the problem's text (nothing of the old file is lost)."""
    document = {
        "format": FORMAT,
        "version": VERSION,
        "tests": {k: [round(v, 6) for v in durations[k]] for k in sorted(durations)},
    }
    directory = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
        os.fchmod(handle, _mode_of(path))
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        return f"cannot write the deadline history {path}: {error}"
    return None
