"""A run's audit records in its own store file: opened when the listener arrives, closed
with the run's summary.

WHY a file per run (sandbox.audit.store): no other run, and no sandbox, can lock or
slow it. The writer (sandbox.audit.writer) opens it on its own thread, so the
notification loop never waits for SQLite; `summary` flushes it and accounts for
every recorded event exactly once. Split from notify_loop.py, whose `AuditLoop`
holds the writer and the tally these read.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from sandbox.printable import json_text

if TYPE_CHECKING:
    from sandbox.audit.writer import Writer
    from sandbox.monitor.notify_loop import AuditLoop
    from sandbox.policy.model import Policy
    from sandbox.protocol import Spec


def open_writer(loop: "AuditLoop", spec: "Spec", policy: "Policy") -> "Writer":
    """The writer of this run's own file in the store directory; sets `loop.db_path`."""
    from sandbox.audit import store, writer
    loop.db_path = db_path = spec.audit_db or store.default_path()
    run_id, files = loop.run_id, loop.files
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
            store.sweep(db_path, cap, keep=f.path)
        except OSError:
            pass   # retention is housekeeping: never the run's problem
        return f
    return writer.Writer(opener, budget=policy.audit.records)


def summary(loop: "AuditLoop") -> dict[str, Any]:
    """Flush the writer; the summary with what was stored, truncated and lost, its
    closing row written. The store file is left open in `loop._store_file` for
    `AuditLoop.release`, after the report.

    Every recorded event is accounted for exactly once:
    ``records == stored_events + not_stored + dropped``."""
    tally, broker = loop.tally, loop.broker
    extra: dict[str, Any] = {"run_id": loop.run_id, "db": loop.db_path,
                             "sync_wakeup": loop.sync_wakeup,
                             "fast_answered": loop.fast_answered,
                             "guarded": list(broker.guarded) if broker else [],
                             "budget": loop.sup.ctx.policy.audit.records}
    if loop.net_summary is not None:
        extra["network"] = loop.net_summary
    if broker is not None and (broker.pid or broker.failed):
        extra.update(broker_pid=broker.pid, broker_error=broker.failed)
    w = loop.writer
    if w is None:
        return tally.summary(dropped=tally.recorded, stored=0, stored_events=0,
                             truncated=False, not_stored=0,
                             db_error=loop.db_error or "no store", **extra)
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
            store.end_run(w.file.conn, loop.run_id, records=tally.recorded,
                          stored=w.stored, dropped=dropped, not_stored=w.not_stored,
                          truncated=w.truncated, summary=json.dumps(out))
        except Exception as exc:
            out["db_error"] = json_text(f"{type(exc).__name__}: {exc}")[0]
        loop._store_file = w.file   # closed by `release`, after the report
    return out
