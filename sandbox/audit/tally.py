"""Run summaries: counts by operation and verdict, top paths, the denied list.

`Tally` is kept by the monitor while it records (plain dict increments on the
hot path) and becomes the RunResult's ``audit`` dict and ``denied`` list;
`from_db` computes the same figures afterwards from the store (`sandbox audit
summary`). What goes into the RunResult is JSON-safe: a path that is not UTF-8
is given as text with U+FFFD and, in the denied list, its exact bytes as
``path_hex`` (the store keeps the bytes of every record).
"""
from __future__ import annotations

from typing import Any

from sandbox.printable import from_bytes, json_text

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
                text, raw = json_text(path)
                d = {"seq": seq, "pid": pid, "operation": op, "syscall": syscall,
                     "path": text, "rule": rule}
                if raw is not None:     # not UTF-8: the exact bytes, losslessly
                    d["path_hex"] = raw
                self.denied.append(d)

    def add_run(self, seq: int, pid: int, op: str, syscall: str, path: str, allowed: bool,
                rule: str, count: int) -> None:
        """`count` consecutive calls with one key, the first numbered `seq`: the same
        tally as `count` calls of `add` (the audit's compiled loop reports repeats so)."""
        if not allowed:            # each denial is listed with its own seq
            for i in range(count):
                self.add(seq + i, pid, op, syscall, path, allowed, rule)
            return
        key = (op, allowed)
        c = self.counts
        c[key] = c.get(key, 0) + count
        p = self.paths
        if path in p:
            p[path] += count
        elif len(p) < PATHS_CAP:
            p[path] = count

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.errors_sample) < 5:
            self.errors_sample.append(json_text(text)[0])

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
               "top_paths": [[json_text(p)[0], n] for p, n in tops], "denied_count": self.denied_count,
               "denied_listed": len(self.denied), "monitor_denied": self.monitor_denied,
               "brokered": self.brokered, "errors": self.errors,
               "vanished": self.vanished}
        if self.errors_sample:
            out["errors_sample"] = list(self.errors_sample)
        out.update(extra)
        return out


def from_db(store: Any, run_id: str, *, top: int = 10) -> dict[str, Any]:
    """The same figures as `Tally.summary`, from the stored records of `run_id`
    (every repeat folded into a row counts: SUM(count))."""
    conn = store.conn(run_id)
    by_op: dict[str, dict[str, int]] = {}
    allowed = denied = 0
    for op, ok, n in conn.execute("SELECT operation, allowed, SUM(count) FROM records "
                                  "GROUP BY operation, allowed"):
        by_op.setdefault(op, {"allowed": 0, "denied": 0})["allowed" if ok else "denied"] += n
        if ok:
            allowed += n
        else:
            denied += n
    tops = conn.execute("SELECT path, SUM(count) AS n FROM records "
                        "GROUP BY path ORDER BY n DESC, path LIMIT ?", (top,)).fetchall()
    denied_tops = conn.execute(
        "SELECT path, operation, rule, SUM(count) AS n FROM records WHERE allowed = 0 "
        "GROUP BY path, operation, rule ORDER BY n DESC, path LIMIT ?", (top,)).fetchall()
    rows = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    info = conn.execute("SELECT policy, files, dropped, not_stored, truncated FROM runs "
                        "WHERE run_id = ?", (run_id,)).fetchone() or (None,) * 5
    return {"run_id": run_id, "policy": info[0], "files": info[1],
            "records": allowed + denied, "stored": rows, "dropped": info[2] or 0,
            "truncated": bool(info[4]), "not_stored": info[3] or 0,
            "by_operation": dict(sorted(by_op.items())),
            "by_verdict": {"allowed": allowed, "denied": denied},
            "top_paths": [[from_bytes(p), n] for p, n in tops],
            "top_denied": [{"path": from_bytes(p), "operation": o, "rule": r, "count": n}
                           for p, o, r, n in denied_tops]}
