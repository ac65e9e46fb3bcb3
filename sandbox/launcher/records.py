"""Bounded lists of what went wrong around a run's messages: handler errors and frames
inbound middleware rejected.

WHY: each such record is kept for the RunResult, and the child decides how many
there are and what their text holds. They were not charged to the run's
`Budget.max_retained`: a child sending 99,000 14-byte frames to a handler that
raises made the launcher keep 99,000 tracebacks (2 MB on the wire, +156 MB of
the launcher's memory, 40 MB of result JSON), and 200 frames of 1 MB type names
with a bad MAC under `HmacAuth` were 200 copies of the name in
`RunResult.rejected` (+1.2 GB). A record says that something failed and why;
the first `MAX_RECORDS` say it, and the rest are counted in `RunResult.clipped`
(found by an attack probe, tests/test_ipc_error_records.py).
"""
from __future__ import annotations

from typing import Any, Callable

MAX_RECORDS = 100         # kept per list and run; the rest are counted
MAX_TEXT = 2000           # characters kept of a record's message (and its other texts)
MAX_TRACEBACK = 8000      # characters kept of a traceback


def clip_text(value: Any, limit: int = MAX_TEXT) -> Any:
    """`value` cut to `limit` characters, its start and its end (where a message says
    what failed, a traceback where it was raised), saying how many went between;
    non-strings as they are."""
    if not isinstance(value, str) or len(value) <= limit:
        return value
    half = limit // 2
    return f"{value[:half]} [{len(value) - 2 * half} characters cut] {value[-half:]}"


def clip_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: clip_text(v, MAX_TRACEBACK if k == "traceback" else MAX_TEXT)
            for k, v in record.items()}


class Records(list):  # type: ignore[type-arg]
    """A list of at most `limit` records, each clipped; `dropped` counts the rest.
    `add(make)` builds a record only when it will be kept (a traceback is not
    formatted to be thrown away)."""

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def append(self, record: Any) -> None:
        if len(self) >= self.limit:
            self.dropped += 1
            return
        super().append(clip_record(record) if isinstance(record, dict) else record)

    def add(self, make: Callable[[], dict[str, Any]]) -> None:
        if len(self) >= self.limit:
            self.dropped += 1
            return
        self.append(make())


def add_record(records: list[dict[str, Any]], make: Callable[[], dict[str, Any]]) -> None:
    """`make()` appended to `records`, built only when a bounded list will keep it."""
    if isinstance(records, Records):
        records.add(make)
    else:
        records.append(make())
