"""`sandbox bench`: run every benchmark, compare with the targets, print a report.

Targets (issue: "Fast sandboxes") are ratios against peers measured in the
same run, so a slower or faster machine does not move the goal posts. A
missed target is printed with the factor by which it was missed.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any, Callable

from sandbox.bench import spawn as S


def machine() -> dict[str, Any]:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "memory_mib": mem,
            "python": platform.python_version(), "uid": os.getuid(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _target(name: str, value: float, goal: float, *, higher_is_better: bool,
            unit: str) -> dict[str, Any]:
    met = value >= goal if higher_is_better else value <= goal
    factor = (goal / value if higher_is_better else value / goal) if value else float("inf")
    return {"target": name, "value": round(value, 3), "goal": goal, "unit": unit, "met": met,
            "missed_by": None if met else f"{factor:.1f}x"}


def run_all(runs: int = 50, quick: bool = False, log: Callable[[str], None] = print) -> dict:
    runs = 10 if quick else runs
    out: dict[str, Any] = {"machine": machine(), "runs": runs, "targets": [], "notes": {}}

    log(f"round trips ({runs} interleaved runs each) ...")
    samples, notes, timings = S.round_trips(runs)
    out["round_trip"] = {k: v.to_dict() for k, v in samples.items()}
    out["notes"].update(notes)
    out["setup_breakdown_ms"] = timings
    action = samples["sandbox no-op action"].median
    if "bwrap" in samples:
        out["targets"].append(_target("no-op action round trip / bwrap /bin/true",
                                      action / samples["bwrap"].median, 1.0,
                                      higher_is_better=False, unit="x"))

    log("sandbox exec from the shell ...")
    cli = S.cli_exec(max(5, runs // 3))
    out["cli_exec"] = {k: v.to_dict() for k, v in cli.items()}
    if "bwrap" in cli:
        out["targets"].append(_target("sandbox exec -- /bin/true / bwrap",
                                      cli["sandbox exec -- /bin/true"].median
                                      / cli["bwrap"].median, 3.0,
                                      higher_is_better=False, unit="x"))

    imp = S.cli_import(max(5, runs // 3))
    out["cli_import"] = {k: v.to_dict() for k, v in imp.items()}

    conc = max(2, os.cpu_count() or 2) * 2
    total = 100 if quick else 400
    log(f"throughput ({total} no-op actions, {conc} at a time) ...")
    rate = S.throughput(total, conc)
    out["throughput_per_s"] = round(rate, 1)
    out["targets"].append(_target("sandboxed no-op actions per second", rate, 400,
                                  higher_is_better=True, unit="/s"))

    n = 20_000 if quick else 100_000
    log(f"IPC ({n} messages child -> parent) ...")
    ipc = S.ipc_rate(n)
    out["ipc_messages_per_s"] = round(ipc)
    out["targets"].append(_target("IPC messages per second", ipc, 200_000,
                                  higher_is_better=True, unit="/s"))

    try:
        from sandbox.bench.audit import bench_audit
        log("audited file opens ...")
        out["audit"] = bench_audit(n=5000 if quick else 20000)
        rate_key = next((k for k in out["audit"] if "audited" in k and "per_s" in k), None)
        if rate_key:
            out["targets"].append(_target("audited opens per second", out["audit"][rate_key],
                                          60_000, higher_is_better=True, unit="/s"))
    except ImportError:
        out["notes"]["audit"] = "audit benchmark not available"

    _netproxy(out, quick, log)   # issue 18: the allowlist proxy (sandbox/bench/netproxy.py)

    count = 50 if quick else 200
    log(f"launcher memory with {count} live sandboxes ...")
    mem = S.memory_per_sandbox(count)
    out["memory"] = mem
    out["targets"].append(_target("launcher memory per live sandbox", mem["per_sandbox_kib"],
                                  2048, higher_is_better=False, unit="KiB"))
    return out


def _netproxy(out: dict, quick: bool, log: Callable[[str], None]) -> None:
    from sandbox.bench.netproxy import bench_proxy
    size = 20_000_000 if quick else 100_000_000
    log(f"allowlist proxy ({size // 1_000_000} MB, connect latency) ...")
    try:
        out["netproxy"] = res = bench_proxy(size, n=50 if quick else 200,
                                            repeat=1 if quick else 3)
    except (OSError, RuntimeError, ValueError) as exc:
        out["notes"]["netproxy"] = f"allowlist proxy benchmark failed: {exc}"
        return
    out["targets"].append(_target("proxied / direct loopback throughput",
                                  res["throughput_ratio"], 0.5, higher_is_better=True, unit="x"))
    out["targets"].append(_target("proxy's added connect latency, p50",
                                  max(res["added_connect_p50_ms"], 0.001), 1.0,
                                  higher_is_better=False, unit="ms"))


def render(res: dict) -> str:
    m = res["machine"]
    lines = [f"machine: Linux {m['kernel']}, {m['cpus']} CPUs, {m['memory_mib']} MiB, "
             f"Python {m['python']}, uid {m['uid']}, {m['date']}",
             f"command: {' '.join(['sandbox', 'bench'] + sys.argv[2:])}", "",
             "round trip (median / p95, ms):"]
    for s in res["round_trip"].values():
        lines.append(f"  {s['name']:<34} {s['median_ms']:>8.2f} {s['p95_ms']:>8.2f}")
    for key in ("bwrap", "firejail"):
        if key in res["notes"]:
            lines.append(f"  note: {res['notes'][key]}")
    lines.append(f"  layers: {res['notes'].get('layers', '')}")
    lines.append("setup breakdown of the last action run (ms since the launcher was called):")
    for k, v in res["setup_breakdown_ms"].items():
        lines.append(f"  {k:<24} {v:>8.2f}")
    lines.append("sandbox exec from the shell (median / p95, ms):")
    for s in res["cli_exec"].values():
        lines.append(f"  {s['name']:<34} {s['median_ms']:>8.2f} {s['p95_ms']:>8.2f}")
    lines.append("CLI start-up (median / p95, ms):")
    for s in res["cli_import"].values():
        lines.append(f"  {s['name']:<34} {s['median_ms']:>8.2f} {s['p95_ms']:>8.2f}")
    lines.append(f"throughput: {res['throughput_per_s']} no-op actions/s")
    lines.append(f"IPC: {res['ipc_messages_per_s']} messages/s")
    if "audit" in res:
        lines.append(f"audit: {res['audit']}")
    if "netproxy" in res:
        lines.append(f"allowlist proxy: {res['netproxy']}")
    mem = res["memory"]
    lines.append(f"memory: {mem['alive_at_once']} sandboxes alive at once, launcher USS "
                 f"{mem['launcher_uss_mib']} -> {mem['peak_uss_mib']} MiB, "
                 f"{mem['per_sandbox_kib']} KiB per sandbox")
    lines.append("targets:")
    for t in res["targets"]:
        verdict = "met" if t["met"] else f"MISSED by {t['missed_by']}"
        lines.append(f"  {t['target']:<46} {t['value']:>10} {t['unit']:<3} "
                     f"(goal {t['goal']}): {verdict}")
    return "\n".join(lines)
