"""One `sandbox bench` run as the Markdown tables of docs/benchmarks.md.

The top of docs/benchmarks.md is one run, copied as it was measured: a hand
copy of a hundred figures is where a wrong one slips in. `sandbox bench
--markdown FILE` writes the run's tables there (beside the usual text), and
``python -m sandbox.bench.markdown RUN.json`` renders a run saved with
``--json``. Nothing is recomputed: every cell is a figure the run holds.
"""
from __future__ import annotations

import json
import sys
from typing import Any


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(head), _row(["---"] * len(head)), *(_row(r) for r in rows), ""]


def _ms(v: Any) -> str:
    return "-" if v is None or v == "-" else f"{v} ms"


def _machine(res: dict[str, Any], command: str) -> list[str]:
    m = res.get("machine", {})
    return [f"Machine: {m.get('cpus')} CPUs, {m.get('memory_mib')} MiB, Linux {m.get('kernel')}, "
            f"Python {m.get('python')}, uid {m.get('uid')}. Command: `{command}`, "
            f"{m.get('date')}, load average {m.get('load')} at the start and "
            f"{m.get('load_after')} at the end.", ""]


def _targets(res: dict[str, Any]) -> list[str]:
    rows = []
    for t in res.get("targets", []):
        value = "-" if t.get("value") is None else f"{t['value']:g}"
        verdict = t.get("verdict", "N/A")
        note = f" ({t['note']})" if t.get("note") else ""
        rows.append([t.get("name", ""), t.get("goal", ""), f"{t.get('measured', '')}{note}",
                     value, f"**{verdict}**" if verdict != "PASS" else verdict])
    return _table(["target", "goal", "measured in this run", "ratio (or figure)", "verdict"],
                  rows)


def _samples(groups: list[dict[str, Any]]) -> list[str]:
    rows = [[s["name"], _ms(s.get("median_ms")), _ms(s.get("p95_ms")), _ms(s.get("p99_ms"))]
            for g in groups for s in g.values()]
    return _table(["contender", "median", "p95", "p99"], rows)


def _setup(res: dict[str, Any]) -> list[str]:
    steps = res.get("setup_breakdown_ms") or {}
    return _table(["step of the last no-op action", "ms since the launcher was called "
                   "(layer.*: that layer's own time)"],
                  [[k, f"{v:.2f}"] for k, v in steps.items()])


def _throughput(res: dict[str, Any]) -> list[str]:
    rows = [[r["concurrency"], r.get("sandbox_per_s"), _ms(r.get("sandbox_median_ms")),
             _ms(r.get("sandbox_p99_ms")), r.get("bare_per_s", "-"), r.get("bwrap_per_s", "-"),
             _ms(r.get("bwrap_median_ms", "-")), _ms(r.get("bwrap_p99_ms", "-"))]
            for r in res.get("throughput", [])]
    return _table(["at once", "sandbox runs/s", "median", "p99", "bare hops runs/s",
                   "bwrap runs/s", "bwrap median", "bwrap p99"], rows)


def _cpu(res: dict[str, Any]) -> list[str]:
    procs: list[str] = []
    for r in res.get("throughput", []):
        procs += [k for k in (r.get("cpu_ms_per_run") or {}) if k not in procs]
    rows = [[r["concurrency"], *((r.get("cpu_ms_per_run") or {}).get(p, "-") for p in procs),
             r.get("cpu_cap_per_s", "-")] for r in res.get("throughput", [])]
    return _table(["at once", *(f"{p} (ms)" for p in procs), "runs/s that CPU allows"], rows)


def _memory(res: dict[str, Any]) -> list[str]:
    def cell(r: dict[str, Any], key: str) -> str:
        alive = r.get(f"{key}_alive", r["concurrency"])
        return f"{r.get(f'{key}_mib_per_sandbox')} MiB" + (
            "" if alive == r["concurrency"] else f" ({alive} alive)")
    rows = [[r["concurrency"], cell(r, "python_action"), cell(r, "exec_program"),
             f"{r.get('bwrap_mib_per_sandbox', '-')} MiB"] for r in res.get("memory", [])]
    return _table(["alive", "Python action", "exec'd program", "bwrap (`sleep`)"], rows)


def _lines(res: dict[str, Any]) -> list[str]:
    out = []
    a = res.get("audit")
    if a:
        out.append(f"Audited opens ({a.get('policy')}): unsandboxed {a.get('bare_opens_per_s')}/s, "
                   f"`files = \"none\"` {a.get('sandbox_none_opens_per_s')}/s, `files = \"all\"` "
                   f"**{a.get('sandbox_all_opens_per_s')}/s**, the C notification loop "
                   f"**{a.get('c_floor_opens_per_s')}/s**, the same C loop answering this "
                   f"Python program {a.get('c_floor_program_opens_per_s')}/s "
                   f"({a.get('records_per_run')} records per run, {a.get('dropped')} dropped, "
                   f"{a.get('fast_answered')} answered by the compiled loop).")
        nn = a.get("new_names")
        if nn:
            out.append(f"Audited lookups of a new name each (`stat` of {nn.get('n')} names "
                       f"that do not exist, in the standard library's directory): unsandboxed "
                       f"{nn.get('bare_per_s')}/s, `files = \"none\"` "
                       f"{nn.get('sandbox_none_per_s')}/s, `files = \"all\"` "
                       f"**{nn.get('sandbox_all_per_s')}/s** ({a.get('new_fast_answered')} "
                       f"answered by the compiled loop).")
    if "ipc_messages_per_s" in res:
        out.append(f"IPC: {res['ipc_messages_per_s']} messages/s, child to parent.")
    for key, note in sorted((res.get("notes") or {}).items()):
        if key not in ("layers",):
            out.append(f"Note ({key}): {note}")
    if "layers" in (res.get("notes") or {}):
        out.append(f"Layers of the no-op action: {res['notes']['layers']}.")
    return [*(f"{ln}\n" for ln in out)]


def render(res: dict[str, Any], command: str = "sandbox bench") -> str:
    """The run's tables, in the order docs/benchmarks.md shows them."""
    parts = [*_machine(res, command), *_targets(res),
             "Round trips and `sandbox exec` from the shell:", "",
             *_samples([res.get("round_trip", {}), res.get("cli_exec", {})]),
             "Where the last no-op action's time went:", "", *_setup(res),
             "Concurrency (no-op actions under `strict`; bare hops and `bwrap /bin/true` beside "
             "them):", "", *_throughput(res),
             "CPU per sandboxed run, by process:", "", *_cpu(res),
             "Memory per live sandbox, PSS of every process the launcher owns:", "",
             *_memory(res), *_lines(res)]
    if "burst" in res:
        from sandbox.bench.burst import render as render_burst
        parts += ["```text", *render_burst(res["burst"]), "```", ""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:   # python -m sandbox.bench.markdown RUN.json
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m sandbox.bench.markdown RUN.json  (a `sandbox bench --json` "
              "output)", file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        with open(argv[0]) as f:
            res = json.load(f)
    except (OSError, ValueError) as exc:
        print(f"python -m sandbox.bench.markdown: {argv[0]}: {exc}", file=sys.stderr)
        return 2
    if not isinstance(res, dict) or "targets" not in res:
        print(f"python -m sandbox.bench.markdown: {argv[0]}: not a `sandbox bench --json` run",
              file=sys.stderr)
        return 2
    sys.stdout.write(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
