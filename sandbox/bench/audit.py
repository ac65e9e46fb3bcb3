"""Audited file opens per second, side by side with the C floor, in one run.

`bench_audit(n)` runs one program that opens and closes a file `n` times and
times the loop *inside* the program (start-up excluded), four ways in one
call, interleaved: unsandboxed; sandboxed under `strict` with ``[audit] files
= "none"``; sandboxed under `strict` as it is (``files = "all"``: every open
round-trips to the monitor, which reads the path, resolves it, asks the engine
and queues a record for SQLite); and the minimal C notification loop
(`floor.py`), the floor any audit loop can reach on this kernel; and that C
loop again answering this very Python program instead of its own C child
(``c_floor_program``: the loop's floor for the same program, unsandboxed and
under a one-syscall filter). The records go to a temporary store. Figures are
medians of `repeat` runs.
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
# A new name at every call: what an import's probing or a build's lookups do (each
# name is looked up once, so no repeat is there to answer). Names that do not exist,
# in the standard library's directory (a directory strict's view holds, and where
# its policy decides every name alike: notify_fast.c's directory keys).
PROGRAM_NEW = r"""
import os, sys, time
n, d = int(sys.argv[1]), sys.argv[2]
st = os.stat
names = [f"{d}/sandbox-bench-{i}" for i in range(n)]
t = time.perf_counter()
for p in names:
    try:
        st(p)
    except OSError:
        pass
print(time.perf_counter() - t)
"""


def _spawn(la: Any, argv: list[str], policy: Any, tmp: str) -> Any:
    """One sandboxed run of a bench program; its result (a failed run fails the bench)."""
    r = la.spawn(argv, policy=policy, output_dir=os.path.join(tmp, "out"))
    if r.status != "ok":
        raise RuntimeError(f"bench run failed: {r.status} {r.reason} {r.stderr!r}")
    return r


def bench_audit(n: int = 20000, repeat: int = 3, path: str = TARGET,
                policy: str = "strict") -> dict[str, Any]:
    """{"bare", "sandbox_none", "sandbox_all", "c_floor"}: opens/s, overheads, record counts."""
    from sandbox.bench.floor import FloorUnavailable, build
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    from sandbox.policy.model import AuditPolicy
    py = sys.executable
    argv = [py, "-I", "-S", "-c", PROGRAM, str(n), path]
    n_new = max(n // 4, 1)
    argv_new = [py, "-I", "-S", "-c", PROGRAM_NEW, str(n_new), os.path.dirname(os.__file__)]
    rates: dict[str, list[float]] = {"bare": [], "sandbox_none": [], "sandbox_all": [],
                                     "c_floor": [], "c_floor_program": [], "new_bare": [],
                                     "new_sandbox_none": [], "new_sandbox_all": []}
    extra: dict[str, Any] = {}
    try:
        floor = build()
    except FloorUnavailable as exc:
        floor = None
        extra["c_floor_error"] = str(exc)
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        la = Launcher(capture_output=True)
        la.audit_db = os.path.join(tmp, "audit")
        base = load_policy(policy)
        pols = {"sandbox_none": base.replace(audit=AuditPolicy(files="none")),
                "sandbox_all": base.replace(audit=AuditPolicy(files="all"))}
        try:
            for _ in range(repeat):
                for prefix, args, count in (("", argv, n), ("new_", argv_new, n_new)):
                    out = subprocess.run(args, capture_output=True, text=True,
                                         check=True).stdout
                    rates[prefix + "bare"].append(count / float(out))
                for key, pol in pols.items():
                    r = _spawn(la, argv_new, pol, tmp)
                    rates["new_" + key].append(n_new / float(r.stdout or "nan"))
                    if r.audit:
                        extra["new_fast_answered"] = r.audit.get("fast_answered", 0)
                    r = _spawn(la, argv, pol, tmp)
                    rates[key].append(n / float(r.stdout or "nan"))
                    if r.audit:
                        extra["records_per_run"] = r.audit["records"]
                        extra["dropped"] = r.audit["dropped"]
                        extra["sync_wakeup"] = r.audit["sync_wakeup"]
                        extra["fast_answered"] = r.audit.get("fast_answered", 0)
                if floor is not None:
                    rates["c_floor"].append(floor.rate(n, path))
                    # the same C loop answering this very Python program (not its own C
                    # child): what the loop costs, apart from the program's language
                    rates["c_floor_program"].append(floor.rate(n, path, argv))
        finally:
            if floor is not None:
                floor.close()
    med = {k: statistics.median(v) for k, v in rates.items() if v}
    res: dict[str, Any] = {
        "n": n, "repeat": repeat, "path": path, "policy": policy,
        "bare_opens_per_s": round(med["bare"]),
        "sandbox_none_opens_per_s": round(med["sandbox_none"]),
        "sandbox_all_opens_per_s": round(med["sandbox_all"]),
        "c_floor_opens_per_s": round(med["c_floor"]) if "c_floor" in med else None,
        "c_floor_program_opens_per_s": (round(med["c_floor_program"])
                                        if "c_floor_program" in med else None),
        "us_per_open": {k: round(1e6 / v, 2) for k, v in med.items()},
        # a new name at every call (PROGRAM_NEW): lookups per second, n_new per run
        "new_names": {"n": n_new, **{k[4:] + "_per_s": round(v) for k, v in med.items()
                                    if k.startswith("new_")}},
        "audit_overhead_us": round(1e6 / med["sandbox_all"] - 1e6 / med["bare"], 2),
        "none_overhead_pct": round(100 * (med["bare"] / med["sandbox_none"] - 1), 1),
        "all_runs": {k: [round(x) for x in v] for k, v in rates.items()}, **extra}
    return res


# What the project's loop and sandbox add to the C floor, one at a time (`decompose`):
# notify_floor.c's switches. "loop" is what sandbox/_native/notify_fast.c does per call
# beyond the floor's RECV, read and SEND; "layers" what a sandboxed caller pays per open.
PARTS: dict[str, tuple[str, ...]] = {
    "floor": (),
    "loop: poll": ("--poll",),
    "loop: readlinkat": ("--readlink",),
    "layers: the policy's filter": ("--filter", "{filter}"),
    "layers: killable wait": ("--killable",),
    "layers: landlock": ("--landlock",),
    "layers: landlock, ABI 1 rights only": ("--landlock-abi1",),
    "loop + layers": ("--poll", "--readlink", "--filter", "{filter}", "--killable",
                      "--landlock"),
}


def _cpu_run(argv: list[str]) -> tuple[float, float]:
    """(seconds the loop took by its own clock, CPU seconds of the floor and its child)."""
    r, w = os.pipe()
    pid = os.posix_spawn(argv[0], argv, os.environ,
                         file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r),
                                       (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status, ru = os.wait4(pid, 0)
    if status != 0 or not out.split():
        raise RuntimeError(f"{' '.join(argv[:8])}: status {status}, output {out!r}")
    return float(out.split()[0]), ru.ru_utime + ru.ru_stime


def decompose(n: int = 20000, repeat: int = 7, path: str = TARGET,
              policy: str = "strict") -> dict[str, Any]:
    """CPU per audited open+close (us, the floor's process and its child together, the
    difference between `n` and `n // 5` opens divided by the difference, so start-up and
    exit cancel out) and the rate by the loop's own clock, for the C floor with each of
    `PARTS` added, interleaved `repeat` times; medians. The CPU figure is what the load of
    other processes moves least: the round trip is serial, so it is also the floor of the
    time per open. The policy's filter is its own compiled program with `files = "all"`.
    """
    from sandbox.bench.floor import build
    from sandbox.isolation import seccomp
    from sandbox.policy import load_policy
    pol = load_policy(policy)
    floor = build()
    small = max(n // 5, 1)
    cpu: dict[str, list[float]] = {k: [] for k in PARTS}
    rate: dict[str, list[float]] = {k: [] for k in PARTS}
    try:
        filt = os.path.join(os.path.dirname(floor.binary), "policy.bpf")
        with open(filt, "wb") as f:
            f.write(seccomp.warm(pol.syscalls, "all", pol.network.mode))
        for _ in range(repeat):
            for key, opts in PARTS.items():
                args = [a.format(filter=filt) for a in opts]
                secs, big = _cpu_run([floor.binary, *args, str(n), path])
                _, little = _cpu_run([floor.binary, *args, str(small), path])
                cpu[key].append((big - little) / (n - small) * 1e6)
                rate[key].append(n / secs)
    finally:
        floor.close()
    base = statistics.median(cpu["floor"])
    return {"n": n, "repeat": repeat, "path": path, "policy": policy,
            "cpu_us_per_open": {k: round(statistics.median(v), 2) for k, v in cpu.items()},
            "added_us": {k: round(statistics.median(v) - base, 2) for k, v in cpu.items()},
            "opens_per_s": {k: round(statistics.median(v)) for k, v in rate.items()},
            "load": [round(x, 1) for x in os.getloadavg()]}


if __name__ == "__main__":
    import json
    from sandbox.bench.count_arg import count_arg
    opens = count_arg(sys.argv[1:], 20000, "python -m sandbox.bench.audit [--decompose] [OPENS]",
                      flags=("--decompose",))
    if "--decompose" in sys.argv[1:]:
        print(json.dumps(decompose(opens), indent=2))
    else:
        print(json.dumps(bench_audit(opens), indent=2))
