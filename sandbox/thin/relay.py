"""What a run's fork hands back to the daemon before it exits: its exit code and its
run-history rows, in one frame on a pipe of its own.

WHY, measured in the daemon's forks of a warm `sandbox exec -- /bin/true` (25 runs,
medians, tools: /tmp harness timing the fork's steps): the fork's own history write
took 3.5 ms (a fresh SQLite connection, its pragmas and schema script, all on
copied pages), and its exit, seen by the daemon through the pidfd, another 2.5 ms
(the teardown of a copy of the daemon's address space), both before the client
heard the code. The daemon, which keeps one writer connection per history file,
writes a row in ~0.15 ms; the frame reaches it as soon as the run is over.

Order kept: the daemon writes the rows *before* it sends the client the code, so a
run is in `sandbox runs` by the time `sandbox exec` returns, as on the cold path.
The fork closes its copies of the client's stdio before it sends the frame, so a
reader of the client's pipe sees end of file when the client exits, not when the
fork is gone. A fork that dies without a frame (a signal) is answered from its
wait status, as before.

Trust: the fork is the daemon's own code, under the daemon's uid, before any of it
runs in a sandbox; the frame is parsed as JSON of a fixed shape and a malformed one
is dropped (the wait status answers then).
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
from typing import NoReturn

from sandbox.errors import SandboxError
from sandbox.history import History

MAX_FRAME = 16 << 20     # a row holds a RunResult as JSON: never near this
Row = tuple[str, list[object], "float | None"]   # (history file, row, retention)


class RelayedHistory(History):
    """A fork's run history: `record_row` keeps the row for the daemon to write
    (`finish`), instead of opening the file from a copy of the daemon."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(path)
        self.rows: list[Row] = []

    def record_row(self, row: tuple[object, ...], retention: float | None) -> None:
        self.rows.append((self.path, list(row), retention))

    def close(self) -> None:
        pass


def finish(fd: int, code: int, history: RelayedHistory | None,
           die_by: int | None = None) -> NoReturn:
    """In the fork, its last step: flush and close the client's stdio, send the frame
    on `fd`, wait until the run's private directory is removed, exit with `code`.
    `die_by`: the signal the client is to end by (sandbox.process_end.die_by)."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    for std in (0, 1, 2):
        try:
            os.close(std)
        except OSError:
            pass
    body = json.dumps({"code": code, "history": history.rows if history else [],
                       "die_by": die_by}, default=str).encode()
    data = len(body).to_bytes(4, "little") + body
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
    # The run's private directory is removed by a thread (launcher.tidy) that os._exit
    # would end mid-way, leaving it on the host's disk (its view files and mountpoints;
    # without namespaces, the program's /tmp itself): wait for it here, after the frame,
    # so the client has its code while the removal finishes.
    from sandbox.launcher import tidy
    tidy.drain()
    os._exit(code)


def read(fd: int) -> tuple[int, list[Row], int | None] | None:
    """In the daemon: the frame on `fd` (the fork writes it whole at once, so this
    waits at most for the rest of one write) as (code, rows, the signal the client is
    to end by), or None (no frame: the fork died first, or sent something else)."""
    data = b""
    want = 4
    while len(data) < want:
        try:
            chunk = os.read(fd, min(want - len(data), 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
        if want == 4 and len(data) == 4:
            size = int.from_bytes(data, "little")
            if size > MAX_FRAME:
                return None
            want = 4 + size
    try:
        got = json.loads(data[4:])
        code = got["code"]
        rows = [(str(p), list(r), None if k is None else float(k))
                for p, r, k in got["history"]]
        die_by = got.get("die_by")
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not isinstance(code, int) or not 0 <= code <= 255:
        return None
    if not isinstance(die_by, int) or not 0 < die_by < 65:
        die_by = None
    return code, rows, die_by


class Writers:
    """The daemon's history writers, one per file (a client's state directory may
    differ from another's only if its socket does too, so in practice one)."""

    def __init__(self) -> None:
        self._by_path: dict[str, History] = {}

    def record(self, rows: list[Row]) -> None:
        for path, row, retention in rows:
            h = self._by_path.get(path)
            if h is None:
                h = self._by_path[path] = History(path)
            try:
                h.record_row(tuple(row), retention)
            except (OSError, sqlite3.Error, SandboxError):
                pass    # history is housekeeping: it never fails a run (as launcher/keep.py)

    def close(self) -> None:
        for h in self._by_path.values():
            try:
                h.close()
            except sqlite3.Error:
                pass
