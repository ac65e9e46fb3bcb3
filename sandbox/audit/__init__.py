"""The file-access audit: records written by the monitor, read back here.

Public API:
- `export_jsonl(run_id, path, db=None) -> int`: a run's records as JSON Lines.
- `records(run_id, denied_only=False, db=None) -> list[dict]`
- `summary(run_id, db=None) -> dict`: counts by operation and verdict, top paths.
- `runs(db=None) -> list[dict]`: audited runs, newest first.
- `default_db_path()`: ``$SANDBOX_AUDIT_DB``, else ``$SANDBOX_HOME/audit.sqlite``.
See docs/audit.md.
"""
from __future__ import annotations

import json
from typing import Any

from sandbox.audit.store import default_path as default_db_path

__all__ = ["default_db_path", "export_jsonl", "records", "summary", "runs"]


def _conn(db: str | None):  # type: ignore[no-untyped-def]
    from sandbox.audit import store
    return store.connect(db, create=False)


def records(run_id: str, *, denied_only: bool = False, db: str | None = None
            ) -> list[dict[str, Any]]:
    from sandbox.audit import store
    conn = _conn(db)
    try:
        return list(store.records(conn, store.find_run(conn, run_id), denied_only=denied_only))
    finally:
        conn.close()


def export_jsonl(run_id: str, path: str, *, db: str | None = None) -> int:
    """Write the run's records, one JSON object per line, in sequence order; returns the count.

    A run that was not audited (files = "none") writes an empty file.
    """
    from sandbox.audit import store
    import os
    dbpath = db or default_db_path()
    n = 0
    with open(path, "w") as out:
        if not os.path.exists(dbpath):
            return 0
        conn = store.connect(dbpath, create=False)
        try:
            if store.run_info(conn, run_id) is None:
                return 0
            for rec in store.records(conn, run_id):
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                n += 1
        finally:
            conn.close()
    return n


def summary(run_id: str, *, db: str | None = None, top: int = 10) -> dict[str, Any]:
    from sandbox.audit import store
    from sandbox.audit.tally import from_db
    conn = _conn(db)
    try:
        return from_db(conn, store.find_run(conn, run_id), top=top)
    finally:
        conn.close()


def runs(*, db: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    from sandbox.audit import store
    conn = _conn(db)
    try:
        return store.runs(conn, limit)
    finally:
        conn.close()
