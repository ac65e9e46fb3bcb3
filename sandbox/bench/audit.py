"""Audited file opens per second: bare, in a sandbox without audit, in a sandbox with files="all".

`bench_audit(n)` runs one program that opens and closes a file `n` times and
times the loop *inside* the program (start-up excluded), three ways in one
call: unsandboxed, sandboxed with ``[audit] files = "none"``, and sandboxed
with ``files = "all"`` (every open round-trips to the monitor, which reads
the path, resolves it, asks the engine and queues a record for SQLite). The
records go to a temporary database. Figures are medians of `repeat` runs.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any

PROGRAM = r"""
import os, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
o, c = os.open, os.close
for _ in range(200):
    c(o(path, os.O_RDONLY))
t = time.perf_counter()
for _ in range(n):
    c(o(path, os.O_RDONLY))
print(time.perf_counter() - t)
"""
TARGET = "/etc/hostname"


def bench_audit(n: int = 20000, repeat: int = 3, path: str = TARGET) -> dict[str, Any]:
    """{"bare", "sandbox_none", "sandbox_all"}: opens/s, plus overheads and record counts."""
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    from sandbox.policy.model import AuditPolicy
    py = sys.executable
    argv = [py, "-I", "-S", "-c", PROGRAM, str(n), path]
    rates: dict[str, list[float]] = {"bare": [], "sandbox_none": [], "sandbox_all": []}
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        la = Launcher(capture_output=True)
        la.audit_db = os.path.join(tmp, "audit")
        base = load_policy("default")
        pols = {"sandbox_none": base.replace(audit=AuditPolicy(files="none")),
                "sandbox_all": base.replace(audit=AuditPolicy(files="all"))}
        for _ in range(repeat):
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            rates["bare"].append(n / float(str(out)))
            for key, pol in pols.items():
                r = la.spawn(argv, policy=pol, output_dir=os.path.join(tmp, "out"))
                if r.status != "ok":
                    raise RuntimeError(f"bench run failed: {r.status} {r.reason} {r.stderr}")
                rates[key].append(n / float(str(r.stdout)))
                if r.audit:
                    extra["records_per_run"] = r.audit["records"]
                    extra["dropped"] = r.audit["dropped"]
                    extra["sync_wakeup"] = r.audit["sync_wakeup"]
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"n": n, "repeat": repeat, "path": path,
            "bare_opens_per_s": round(med["bare"]),
            "sandbox_none_opens_per_s": round(med["sandbox_none"]),
            "sandbox_all_opens_per_s": round(med["sandbox_all"]),
            "us_per_open": {k: round(1e6 / v, 2) for k, v in med.items()},
            "audit_overhead_us": round(1e6 / med["sandbox_all"] - 1e6 / med["bare"], 2),
            "none_overhead_pct": round(100 * (med["bare"] / med["sandbox_none"] - 1), 1),
            "all_runs": {k: [round(x) for x in v] for k, v in rates.items()}, **extra}


if __name__ == "__main__":
    import json
    print(json.dumps(bench_audit(int(sys.argv[1]) if len(sys.argv) > 1 else 20000), indent=2))
