"""`sandbox bench`: run every benchmark, compare with the targets, print a report.

Targets (issue 15, "Fast sandboxes"; issue 14's memory) are ratios against
peers measured in the same run (`targets.py`), so a slower or faster machine
does not move the goal posts. Each is printed PASS, MISS (with its ratio) or
N/A (with why it could not be measured in this run).
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any, Callable

from sandbox.bench import spawn as S
from sandbox.bench import sweep
from sandbox.bench.targets import evaluate

LEVELS = [1, 2, 4, 8, 16, 32, 64]
QUICK_LEVELS = [1, 4, 64]


def machine() -> dict[str, Any]:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except OSError:
        pass
    return {"kernel": platform.release(), "cpus": os.cpu_count(), "memory_mib": mem,
            "python": platform.python_version(), "uid": os.getuid(),
            "load": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def run_all(runs: int = 50, quick: bool = False, log: Callable[[str], None] = print) -> dict:
    runs = min(runs, 10) if quick else runs
    out: dict[str, Any] = {"machine": machine(), "runs": runs, "notes": {}}

    log(f"round trips ({runs} interleaved runs each) ...")
    samples, notes, timings = S.round_trips(runs)
    out["round_trip"] = {k: v.to_dict() for k, v in samples.items()}
    out["notes"].update(notes)
    out["setup_breakdown_ms"] = timings

    log("sandbox exec from the shell ...")
    cli, warm_note = S.cli_exec(max(5, runs // 3))
    out["cli_exec"] = {k: v.to_dict() for k, v in cli.items()}
    if warm_note:
        out["notes"]["warm_exec"] = warm_note
    out["cli_import"] = {k: v.to_dict() for k, v in S.cli_import(max(5, runs // 3)).items()}

    rounds = 3 if quick else 10
    log(f"bursts of 4 runs at once ({rounds} rounds): pool hit, miss, pools off, bwrap ...")
    from sandbox.bench.burst import bursts
    try:
        out["burst"] = bursts(size=4, rounds=rounds)
    except (OSError, RuntimeError) as exc:
        out["notes"]["burst"] = f"burst benchmark failed: {exc}"

    levels = QUICK_LEVELS if quick else LEVELS
    log(f"throughput and latency at concurrency {levels} ...")
    out["throughput"] = sweep.throughput_sweep(
        levels, (lambda c: max(16, c)) if quick else (lambda c: max(100, 3 * c)),
        bwrap=S.peers()["bwrap"] is not None)

    n = 20_000 if quick else 100_000
    log(f"IPC ({n} messages child -> parent) ...")
    out["ipc_messages_per_s"] = round(S.ipc_rate(n))

    log("audited file opens, against the C floor ...")
    from sandbox.bench.audit import bench_audit
    out["audit"] = bench_audit(n=5000 if quick else 20000)

    _netproxy(out, quick, log)   # issue 18: the allowlist proxy (sandbox/bench/netproxy.py)

    mlevels = [50] if quick else [1, 4, 16, 50, 64]   # issue 14 counts 50 alive
    log(f"memory with {mlevels} sandboxes alive at once ...")
    out["memory"] = sweep.memory_sweep(mlevels, bwrap=S.peers()["bwrap"] is not None)
    out["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    out["targets"] = [t.to_dict() for t in evaluate(out)]
    return out


def _netproxy(out: dict, quick: bool, log: Callable[[str], None]) -> None:
    from sandbox.bench.netproxy import bench_proxy
    size = 20_000_000 if quick else 100_000_000
    log(f"allowlist proxy ({size // 1_000_000} MB, connect latency) ...")
    try:
        out["netproxy"] = bench_proxy(size, n=50 if quick else 200, repeat=1 if quick else 5)
    except (OSError, RuntimeError, ValueError) as exc:
        out["notes"]["netproxy"] = f"allowlist proxy benchmark failed: {exc}"


def _samples(title: str, group: dict[str, dict]) -> list[str]:
    lines = [f"{title} (median / p95 / p99, ms):"]
    for s in group.values():
        lines.append(f"  {s['name']:<44} {s['median_ms']:>8.2f} {s['p95_ms']:>8.2f} "
                     f"{s['p99_ms']:>8.2f}")
    return lines


def render(res: dict) -> str:
    m = res["machine"]
    lines = [f"machine: Linux {m['kernel']}, {m['cpus']} CPUs, {m['memory_mib']} MiB, "
             f"Python {m['python']}, uid {m['uid']}, {m['date']}, load {m['load']} -> "
             f"{m.get('load_after')}",
             f"command: {' '.join(['sandbox', 'bench'] + sys.argv[2:])}", ""]
    lines += _samples("round trip", res["round_trip"])
    for key in ("bwrap", "firejail", "warm_exec"):
        if key in res["notes"]:
            lines.append(f"  note: {res['notes'][key]}")
    lines.append(f"  layers: {res['notes'].get('layers', '')}")
    lines.append("setup breakdown of the last action run (ms since the launcher was called):")
    for k, v in res["setup_breakdown_ms"].items():
        lines.append(f"  {k:<24} {v:>8.2f}")
    lines += _samples("sandbox exec from the shell", res["cli_exec"])
    lines += _samples("CLI start-up", res["cli_import"])
    if "burst" in res:
        from sandbox.bench.burst import render as render_burst
        lines += render_burst(res["burst"])
    elif "burst" in res["notes"]:
        lines.append(f"bursts: {res['notes']['burst']}")
    lines.append("concurrency: runs/s, median and p99 latency (ms), sandbox | bare hops | "
                 "bwrap:")
    for r in res["throughput"]:
        lines.append(f"  c={r['concurrency']:<3} {r['sandbox_per_s']:>8}/s {r['sandbox_median_ms']:>8} "
                     f"{r['sandbox_p99_ms']:>8} | {r.get('bare_per_s', '-'):>8}/s "
                     f"{r.get('bare_median_ms', '-'):>8} {r.get('bare_p99_ms', '-'):>8} "
                     f"| {r.get('bwrap_per_s', '-'):>8}/s "
                     f"{r.get('bwrap_median_ms', '-'):>8} {r.get('bwrap_p99_ms', '-'):>8}")
    lines.append("CPU per sandboxed run (ms, by process) and the rate it allows on "
                 f"{res['machine']['cpus']} CPUs:")
    for r in res["throughput"]:
        cpu = r.get("cpu_ms_per_run") or {}
        lines.append(f"  c={r['concurrency']:<3} " + " ".join(f"{k} {v}" for k, v in cpu.items())
                     + f" -> {r.get('cpu_cap_per_s')}/s")
    lines.append("memory per live sandbox (MiB PSS of the whole tree): Python action | exec'd "
                 "program | bwrap:")
    for r in res["memory"]:
        lines.append(f"  c={r['concurrency']:<3} {r['python_action_mib_per_sandbox']:>8} "
                     f"{r['exec_program_mib_per_sandbox']:>8} {r.get('bwrap_mib_per_sandbox', '-'):>8}")
    lines.append(f"IPC: {res['ipc_messages_per_s']} messages/s")
    a = res["audit"]
    lines.append(f"audited opens/s ({a['policy']}): bare {a['bare_opens_per_s']}, files=none "
                 f"{a['sandbox_none_opens_per_s']}, files=all {a['sandbox_all_opens_per_s']}, "
                 f"C notify loop {a['c_floor_opens_per_s']}, the same C loop answering this "
                 f"Python program {a.get('c_floor_program_opens_per_s')} "
                 f"({a.get('records_per_run')} records, {a.get('dropped')} dropped, "
                 f"{a.get('fast_answered')} answered by the compiled loop)")
    nn = a.get("new_names")
    if nn:
        lines.append(f"audited lookups of a new name each/s: bare {nn.get('bare_per_s')}, "
                     f"files=none {nn.get('sandbox_none_per_s')}, files=all "
                     f"{nn.get('sandbox_all_per_s')} ({nn.get('n')} names a run; "
                     f"{a.get('new_fast_answered')} calls answered by the compiled loop)")
    if "netproxy" in res:
        lines.append(f"allowlist proxy: {res['netproxy']}")
    lines.append("")
    lines.append("targets:")
    for t in res["targets"]:
        ratio = "-" if t["value"] is None else f"{t['value']:g}"
        note = f"  ({t['note']})" if t["note"] else ""
        lines.append(f"  {t['verdict']:<4} {t['name']:<58} {ratio:>9} (goal {t['goal']}; "
                     f"{t['measured']}){note}")
    return "\n".join(lines)
