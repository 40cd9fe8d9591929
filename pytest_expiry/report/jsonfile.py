"""The JSON report (``--expiry-report=PATH``): every record of the session, with counts."""

from __future__ import annotations

import json
import os
import sys

from pytest_expiry.record import SCHEMA_VERSION, Record

__all__ = ["write_json"]


def _count(records: list[Record], *kinds: str) -> int:
    return sum(1 for record in records if record["event"] in kinds)


def write_json(path: str, records: list[Record], exit_status: int) -> None:
    """Write the report; an unwritable path is reported on stderr, never fatal."""
    document = {
        "version": SCHEMA_VERSION,
        "exit_status": exit_status,
        "expired": _count(records, "expired", "hard_killed"),
        "slow": _count(records, "slow"),
        "not_run": _count(records, "not_run"),
        "leaked": _count(records, "leaked"),
        "leaked_threads": sum(len(r["threads"]) for r in records if r["event"] == "leaked_thread"),
        "exit_blocked": _count(records, "exit_blocked"),
        "events": records,
    }
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as out:
            json.dump(document, out, indent=2)
    except OSError as error:
        sys.stderr.write(f"pytest-expiry: cannot write the JSON report {path}: {error}\n")
