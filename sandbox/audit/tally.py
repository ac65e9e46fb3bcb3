"""Run summaries: counts by operation and verdict, top paths, the denied list.

`Tally` is kept by the monitor while it records (plain dict increments on the
hot path) and becomes the RunResult's ``audit`` dict and ``denied`` list;
`from_db` computes the same figures afterwards from the store (`sandbox audit
summary`).
"""
from __future__ import annotations

import sqlite3
from typing import Any

DENIED_CAP = 1000          # denied operations listed in the RunResult (all are in the store)
PATHS_CAP = 50_000         # distinct paths counted for "top paths" (then only known ones grow)


class Tally:
    def __init__(self, files: str) -> None:
        self.files = files
        self.checked = 0          # notifications handled (file syscalls seen)
        self.recorded = 0         # records produced (all, or only denied ones)
        self.counts: dict[tuple[str, bool], int] = {}
        self.paths: dict[str, int] = {}
        self.denied: list[dict[str, Any]] = []
        self.denied_count = 0
        self.monitor_denied = 0   # answered EACCES by the monitor itself
        self.brokered = 0         # performed by the monitor (guarded trees)
        self.errors = 0           # notifications the loop could not decode (answered CONTINUE)
        self.vanished = 0         # callers gone before their paths were read to the end
        self.errors_sample: list[str] = []

    def add(self, seq: int, pid: int, op: str, syscall: str, path: str, allowed: bool,
            rule: str) -> None:
        key = (op, allowed)
        c = self.counts
        c[key] = c.get(key, 0) + 1
        p = self.paths
        if path in p:
            p[path] += 1
        elif len(p) < PATHS_CAP:
            p[path] = 1
        if not allowed:
            self.denied_count += 1
            if len(self.denied) < DENIED_CAP:
                self.denied.append({"seq": seq, "pid": pid, "operation": op, "syscall": syscall,
                                    "path": path, "rule": rule})

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.errors_sample) < 5:
            self.errors_sample.append(text)

    def summary(self, *, top: int = 10, **extra: Any) -> dict[str, Any]:
        by_op: dict[str, dict[str, int]] = {}
        allowed = denied = 0
        for (op, ok), n in sorted(self.counts.items()):
            by_op.setdefault(op, {"allowed": 0, "denied": 0})["allowed" if ok else "denied"] += n
            if ok:
                allowed += n
            else:
                denied += n
        tops = sorted(self.paths.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        out = {"files": self.files, "checked": self.checked, "records": self.recorded,
               "by_operation": by_op, "by_verdict": {"allowed": allowed, "denied": denied},
               "top_paths": [[p, n] for p, n in tops], "denied_count": self.denied_count,
               "denied_listed": len(self.denied), "monitor_denied": self.monitor_denied,
               "brokered": self.brokered, "errors": self.errors,
               "vanished": self.vanished}
        if self.errors_sample:
            out["errors_sample"] = list(self.errors_sample)
        out.update(extra)
        return out


def from_db(conn: sqlite3.Connection, run_id: str, *, top: int = 10) -> dict[str, Any]:
    """The same figures as `Tally.summary`, from the stored records of `run_id`."""
    by_op: dict[str, dict[str, int]] = {}
    allowed = denied = 0
    for op, ok, n in conn.execute("SELECT operation, allowed, COUNT(*) FROM records "
                                  "WHERE run_id = ? GROUP BY operation, allowed", (run_id,)):
        by_op.setdefault(op, {"allowed": 0, "denied": 0})["allowed" if ok else "denied"] += n
        if ok:
            allowed += n
        else:
            denied += n
    tops = conn.execute("SELECT path, COUNT(*) AS n FROM records WHERE run_id = ? "
                        "GROUP BY path ORDER BY n DESC, path LIMIT ?", (run_id, top)).fetchall()
    denied_tops = conn.execute(
        "SELECT path, operation, rule, COUNT(*) AS n FROM records WHERE run_id = ? AND "
        "allowed = 0 GROUP BY path, operation, rule ORDER BY n DESC, path LIMIT ?",
        (run_id, top)).fetchall()
    info = conn.execute("SELECT policy, files, records, dropped, started, ended FROM runs "
                        "WHERE run_id = ?", (run_id,)).fetchone() or (None,) * 6
    return {"run_id": run_id, "policy": info[0], "files": info[1],
            "records": allowed + denied, "dropped": info[3] or 0,
            "by_operation": dict(sorted(by_op.items())),
            "by_verdict": {"allowed": allowed, "denied": denied},
            "top_paths": [[p, n] for p, n in tops],
            "top_denied": [{"path": p, "operation": o, "rule": r, "count": n}
                           for p, o, r, n in denied_tops]}
