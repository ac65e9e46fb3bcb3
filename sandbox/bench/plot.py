"""`sandbox bench --plot DIR`: the figures of one run as PNGs (matplotlib, the `bench` extra).

bench-latency.png      the distribution of round trips (ECDF), sandbox against bwrap and firejail
bench-concurrency.png  runs per second, p99/median latency and memory per live sandbox, 1..64
bench-setup.png        where the time of one no-op action goes (the launcher's and monitor's marks)
bench-audit.png        audited opens per second against the C notification loop
"""
from __future__ import annotations

import os
from typing import Any


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'sandbox[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw(res: dict[str, Any], directory: str) -> list[str]:
    plt = _pyplot()
    os.makedirs(directory, exist_ok=True)
    stamp = f"{res['machine']['date']}, {res['machine']['cpus']} CPUs, load {res['machine']['load']}"
    files = [_latency(plt, res, directory, stamp), _concurrency(plt, res, directory, stamp),
             _setup(plt, res, directory, stamp), _audit(plt, res, directory, stamp)]
    return [f for f in files if f]


def _save(plt, fig, directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latency(plt, res, directory, stamp) -> str:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series = dict(res["round_trip"])
    for key, s in res["cli_exec"].items():
        series[key if key != "bwrap" else "bwrap (beside sandbox exec)"] = s
    for name, s in series.items():
        xs = sorted(s["times_ms"])
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{name} (median {s['median_ms']:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("round trip, ms (log scale)")
    ax.set_ylabel("fraction of runs")
    ax.set_title(f"Round-trip latency distribution\n{stamp}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(plt, fig, directory, "bench-latency.png")


def _concurrency(plt, res, directory, stamp) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    tp = res["throughput"]
    cs = [r["concurrency"] for r in tp]
    ax = axes[0]
    ax.plot(cs, [r["sandbox_per_s"] for r in tp], "o-", label="sandbox no-op action (strict)")
    if tp and "bwrap_per_s" in tp[0]:
        ax.plot(cs, [r["bwrap_per_s"] for r in tp], "s--", label="bwrap /bin/true")
    ax.set_ylabel("runs per second")
    ax.set_title("throughput")
    ax = axes[1]
    ax.plot(cs, [r["sandbox_median_ms"] for r in tp], "o-", label="sandbox median")
    ax.plot(cs, [r["sandbox_p99_ms"] for r in tp], "o:", label="sandbox p99")
    if tp and "bwrap_median_ms" in tp[0]:
        ax.plot(cs, [r["bwrap_median_ms"] for r in tp], "s--", label="bwrap median")
        ax.plot(cs, [r["bwrap_p99_ms"] for r in tp], "s:", label="bwrap p99")
    ax.set_yscale("log")
    ax.set_ylabel("latency per run, ms (log)")
    ax.set_title("latency")
    ax = axes[2]
    mem = res["memory"]
    mc = [r["concurrency"] for r in mem]
    ax.plot(mc, [r["python_action_mib_per_sandbox"] for r in mem], "o-", label="Python action")
    ax.plot(mc, [r["exec_program_mib_per_sandbox"] for r in mem], "^-", label="exec'd program")
    if mem and "bwrap_mib_per_sandbox" in mem[0]:
        ax.plot(mc, [r["bwrap_mib_per_sandbox"] for r in mem], "s--", label="bwrap sleep")
    ax.set_ylabel("MiB PSS per live sandbox")
    ax.set_title("memory (whole process tree)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sandboxes at once")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(stamp, fontsize=8)
    return _save(plt, fig, directory, "bench-concurrency.png")


def _setup(plt, res, directory, stamp) -> str | None:
    marks = {k: v for k, v in res.get("setup_breakdown_ms", {}).items() if not k.startswith("layer.")}
    if not marks:
        return None
    layers = {k[6:]: v for k, v in res["setup_breakdown_ms"].items() if k.startswith("layer.")}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    ordered = sorted(marks.items(), key=lambda kv: kv[1])
    prev = 0.0
    for i, (name, at) in enumerate(ordered):
        ax.barh(i, at - prev, left=prev)
        ax.text(at, i, f" {at - prev:.1f}", va="center", fontsize=7)
        prev = at
    ax.set_yticks(range(len(ordered)), [n for n, _ in ordered], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the launcher was called (bar: the phase ending at the mark)")
    ax.set_title("one no-op Python action, strict policy")
    bx.barh(list(layers), list(layers.values()))
    bx.invert_yaxis()
    bx.set_xlabel("ms inside PID 1")
    bx.set_title("layers")
    fig.suptitle(stamp, fontsize=8)
    return _save(plt, fig, directory, "bench-setup.png")


def _audit(plt, res, directory, stamp) -> str | None:
    a = res.get("audit")
    if not a:
        return None
    names = ["unsandboxed", "files=none", "files=all\n(the monitor)", "C notify loop\n(floor)"]
    vals = [a["bare_opens_per_s"], a["sandbox_none_opens_per_s"], a["sandbox_all_opens_per_s"],
            a["c_floor_opens_per_s"] or 0]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, vals, color=["grey", "tab:blue", "tab:orange", "tab:green"])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("opens + closes per second")
    ax.set_title(f"audited file opens ({a['policy']} policy)\n{stamp}", fontsize=9)
    return _save(plt, fig, directory, "bench-audit.png")
