"""Secret env values out of a run's audit files, while the server still holds them.

The monitor records the exact bytes of every path a program opened, so a
program that opens a file named after a secret (`cat /root/$TOKEN`) put the
value in the audit store, and `GET /v1/runs/{id}/audit` and the suggested
policy served it (probe2 finding 11). The secret values live in memory only
until the run ends, so this runs then (`Runs.execute`, on the server or the
worker, before the result is recorded and the file shipped): every record's
path and flags, and the run's summary, get `[secret]` in place of each value.

On disk: the file is rewritten with SQLite's `secure_delete` (the old bytes
are zeroed in the file) and an in-memory journal (they never reach a
journal file). What is not covered: a run whose executor died before it ended
(`lost`) keeps its file as the monitor wrote it, and blocks the filesystem
freed earlier are not scrubbed.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
from typing import Any, Sequence

from sandbox.service.retention import audited_runs
from sandbox.service.streams import SECRET_MASK, mask

log = logging.getLogger("sandbox.service")


def _masked(value: Any, needles: Sequence[bytes]) -> Any:
    if not isinstance(value, (bytes, str)):
        return value
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if not any(n in raw for n in needles):
        return value
    for n in needles:                 # longest first: a secret inside another is masked once
        raw = raw.replace(n, SECRET_MASK.encode())
    return raw if isinstance(value, bytes) else raw.decode("utf-8", "surrogateescape")


def mask_file(path: str, secrets: Sequence[str]) -> int:
    """Mask `secrets` in one audit file; the records changed."""
    needles = [s.encode("utf-8", "surrogateescape")
               for s in sorted({s for s in secrets if s}, key=len, reverse=True)]
    if not needles or not os.path.isfile(path):
        return 0
    conn = sqlite3.connect(path, isolation_level=None, timeout=5)
    try:
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA journal_mode = MEMORY")
        conn.execute("BEGIN IMMEDIATE")
        changed = []
        for seq, p, flags in conn.execute("SELECT seq, path, flags FROM records"):
            mp, mf = _masked(p, needles), _masked(flags, needles)
            if mp is not p or mf is not flags:
                changed.append((mp, mf, seq))
        conn.executemany("UPDATE records SET path = ?, flags = ? WHERE seq = ?", changed)
        for run_id, summary, argv, paths in conn.execute(
                "SELECT run_id, summary, argv, paths FROM runs").fetchall():
            conn.execute("UPDATE runs SET summary = ?, argv = ?, paths = ? WHERE run_id = ?",
                         (_mask_json(summary, secrets), _masked(argv, needles),
                          _masked(paths, needles), run_id))
        conn.execute("COMMIT")
        return len(changed)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def _mask_json(text: Any, secrets: Sequence[str]) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.dumps(mask(json.loads(text), list(secrets)))
    except ValueError:
        return text


def mask_run(audit_dir: str, result: Any, secrets: Sequence[str]) -> int:
    """Mask the audit files of a run and of its nested runs (RunResult as a dict)."""
    from sandbox.audit.store import run_file
    if not secrets:
        return 0
    done = 0
    for launcher_run_id in audited_runs(result):
        try:
            done += mask_file(run_file(audit_dir, launcher_run_id), secrets)
        except (ValueError, sqlite3.Error, OSError) as exc:
            log.warning("audit of %s: secrets not masked: %s", launcher_run_id, exc)
    return done
