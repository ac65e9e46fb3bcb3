"""A run's audit records in its own store file: opened when the listener arrives, closed
with the run's summary.

WHY a file per run (sandbox.audit.store): no other run, and no sandbox, can lock or
slow it. The writer (sandbox.audit.writer) opens it on its own thread, so the
notification loop never waits for SQLite; `summary` flushes it and accounts for
every recorded event exactly once. Split from notify_loop.py, whose `AuditLoop`
holds the writer and the tally.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from sandbox.printable import json_text

if TYPE_CHECKING:
    from sandbox.audit.store import RunFile
    from sandbox.audit.tally import Tally
    from sandbox.audit.writer import Writer
    from sandbox.policy.model import Policy
    from sandbox.protocol import Spec


def open_writer(run_id: str, files: str, spec: "Spec", policy: "Policy"
                ) -> tuple["Writer", str]:
    """The writer of this run's own file in the store directory, and the directory."""
    from sandbox.audit import retention, store, writer
    db_path = spec.audit_db or store.default_path()
    argv = json.dumps(spec.argv) if spec.argv is not None else None
    learning = policy.to_dict()   # what `policy suggest` keeps, without the launcher's
    store_dir = os.path.realpath(db_path)   # own deny of the store (prepare.hide)
    learning["filesystem"]["deny"] = [d for d in learning["filesystem"]["deny"]
                                      if d != store_dir]
    paths = json.dumps({"workdir": spec.paths.workdir, "output": spec.paths.output,
                        "policy": learning})
    cap = int(spec.audit_max_bytes or store.max_bytes())

    def opener() -> store.RunFile:  # runs on the writer's thread (see writer.Writer)
        f = store.create_run(db_path, run_id, policy=policy.name, files=files,
                             mode=spec.mode, argv=argv, paths=paths)
        try:
            retention.sweep(db_path, cap, keep=f.path)
        except OSError:
            pass   # retention is housekeeping: never the run's problem
        return f
    return writer.Writer(opener, budget=policy.audit.records), db_path


def summary(tally: "Tally", w: "Writer | None", run_id: str, db_error: str | None,
            extra: dict[str, Any]) -> tuple[dict[str, Any], "RunFile | None"]:
    """Flush the writer; the summary (with the run's `extra` fields) of what was
    stored, truncated and lost, its closing row written; and the store file, left
    open for the caller to close after the report (AuditLoop.release).

    Every recorded event is accounted for exactly once:
    ``records == stored_events + not_stored + dropped``."""
    if w is None:
        return tally.summary(dropped=tally.recorded, stored=0, stored_events=0,
                             truncated=False, not_stored=0,
                             db_error=db_error or "no store", **extra), None
    w.close()
    extra["queue_peak"] = w.queue_peak
    lost = tally.recorded - w.events     # never reached the writer (cannot happen)
    dropped = w.dropped + max(0, lost)
    if w.error:
        extra["db_error"] = json_text(w.error)[0]
    out = tally.summary(dropped=dropped, stored=w.stored, stored_events=w.stored_events,
                        truncated=w.truncated, not_stored=w.not_stored, **extra)
    if w.file is not None:
        from sandbox.audit import store
        try:
            store.end_run(w.file.conn, run_id, records=tally.recorded,
                          stored=w.stored, dropped=dropped, not_stored=w.not_stored,
                          truncated=w.truncated, summary=json.dumps(out))
        except Exception as exc:
            out["db_error"] = json_text(f"{type(exc).__name__}: {exc}")[0]
    return out, w.file
