"""The file-access audit: records written by the monitor, read back here.

Public API:
- `export_jsonl(run_id, path, db=None) -> int`: a run's records as JSON Lines.
- `records(run_id, denied_only=False, db=None) -> list[dict]`
- `summary(run_id, db=None) -> dict`: counts by operation and verdict, top paths.
- `runs(db=None) -> list[dict]`: audited runs, newest first.
- `default_db_path()`: the store directory, ``$SANDBOX_AUDIT_DB``, else ``$SANDBOX_HOME/audit``.
- `jsonable(record) -> dict`: a record fit for JSON (see below).

A record's ``path`` (and ``flags``) is a str that holds the exact bytes the
program passed (``surrogateescape`` for what is not UTF-8; ``os.fsencode``
gives the bytes back). For JSON, `jsonable` keeps valid UTF-8 as it is and
otherwise gives the text with U+FFFD plus ``path_hex`` / ``flags_hex``, the
exact bytes. See docs/audit.md.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TextIO

from sandbox.audit.store import default_path as default_db_path
from sandbox.printable import json_text

if TYPE_CHECKING:
    from sandbox.audit.store import Store

__all__ = ["default_db_path", "export_jsonl", "jsonable", "records", "summary", "runs"]


def _store(db: str | None) -> Store:
    from sandbox.audit import store
    return store.connect(db)


def jsonable(rec: dict[str, Any]) -> dict[str, Any]:
    """`rec` with path and flags made valid JSON text, losslessly (``*_hex`` when needed)."""
    out = dict(rec)
    for key in ("path", "flags"):
        v = out.get(key)
        if isinstance(v, str):
            text, raw = json_text(v)
            out[key] = text
            if raw is not None:
                out[key + "_hex"] = raw
    return out


def records(run_id: str, *, denied_only: bool = False, db: str | None = None
            ) -> list[dict[str, Any]]:
    from sandbox.audit import store
    st = _store(db)
    try:
        return list(store.records(st, store.find_run(st, run_id), denied_only=denied_only))
    finally:
        st.close()


def export_jsonl(run_id: str, path: str | TextIO, *, db: str | None = None) -> int:
    """Write the run's records, one JSON object per line, in sequence order; returns the count.

    `path`: a file name (created or truncated, never through a symlink at its last
    component), or an open text file (the CLI's, checked before the run).
    A run that was not audited (files = "none") writes an empty file.
    """
    import os
    if isinstance(path, str):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            return export_jsonl(run_id, f, db=db)
    from sandbox.audit import store
    dbpath = db or default_db_path()
    if not os.path.isdir(dbpath):
        return 0
    n = 0
    st = store.connect(dbpath)
    try:
        if store.run_info(st, run_id) is None:
            return 0
        for rec in store.records(st, run_id):
            path.write(json.dumps(jsonable(rec)) + "\n")   # ASCII: see docs/audit.md
            n += 1
    finally:
        st.close()
    return n


def summary(run_id: str, *, db: str | None = None, top: int = 10) -> dict[str, Any]:
    from sandbox.audit import store
    from sandbox.audit.tally import from_db
    st = _store(db)
    try:
        return from_db(st, store.find_run(st, run_id), top=top)
    finally:
        st.close()


def runs(*, db: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    from sandbox.audit import store
    st = _store(db)
    try:
        return store.runs(st, limit)
    finally:
        st.close()
