"""The targets of issue 15 (and the memory targets of issue 14), as ratios against peers
measured in the same run, each with PASS, MISS or N/A (and why)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sandbox.bench.spawn import BARE


@dataclass
class Target:
    name: str
    goal: str              # e.g. "<= 1.0x bwrap"
    measured: str          # the raw figures the ratio came from
    value: float | None    # the ratio (or the figure) compared with the goal
    limit: float
    higher_is_better: bool
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "N/A"
        ok = self.value >= self.limit if self.higher_is_better else self.value <= self.limit
        return "PASS" if ok else "MISS"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _throughput_floor(row: dict[str, Any], goal: float = 0.75) -> str:
    """What bounds a sweep row's rate: the CPU each run cost (the rate it allows on this
    machine, the part that cost most, and the CPU per run that `goal` x bwrap's rate
    would allow) and the bare hops' own rate."""
    cpu, parts = row.get("cpu_ms_per_run") or {}, []
    if cpu.get("total"):
        top = max((k for k in cpu if k != "total"), key=lambda k: cpu[k])
        cap, bw = row.get("cpu_cap_per_s"), row.get("bwrap_per_s")
        need = f", {goal:g}x bwrap needs <= " \
            f"{round(cpu['total'] * (cap or 0) / (goal * bw), 2)} ms" if cap and bw else ""
        parts.append(f"floor: {cpu['total']} ms of CPU per run caps it at "
                     f"{cap}/s ({top} {cpu[top]} ms{need})")
    if row.get("bare_per_s"):
        parts.append(f"the bare hops {row['bare_per_s']}/s "
                     f"({_ratio(row['bare_per_s'], row.get('bwrap_per_s'))}x)")
    return "; ".join(parts)


def evaluate(res: dict[str, Any]) -> list[Target]:
    rt, cli, out = res.get("round_trip", {}), res.get("cli_exec", {}), []
    bw = rt.get("bwrap", {}).get("median_ms")
    act = rt.get("sandbox no-op action", {}).get("median_ms")
    bare = rt.get(BARE, {}).get("median_ms")
    out.append(Target("no-op Python action round trip vs bwrap /bin/true", "<= 1.0x",
                      f"{act} ms vs {bw} ms", _ratio(act, bw), 1.0, False,
                      "bwrap not installed" if not bw else
                      f"floor: the bare hops {bare} ms ({_ratio(bare, bw)}x), "
                      f"the rest containment and bookkeeping" if bare else ""))

    sweep = {r["concurrency"]: r for r in res.get("throughput", [])}
    at4 = sweep.get(4, {})
    out.append(Target("no-op actions per second at concurrency 4 vs bwrap", ">= 0.75x",
                      f"{at4.get('sandbox_per_s')}/s vs {at4.get('bwrap_per_s')}/s",
                      _ratio(at4.get("sandbox_per_s"), at4.get("bwrap_per_s")), 0.75, True,
                      _throughput_floor(at4) if at4.get("bwrap_per_s")
                      else "not measured at concurrency 4"))

    cbw = cli.get("bwrap", {}).get("median_ms")
    warm = cli.get("sandbox exec -- /bin/true (warm daemon)", {}).get("median_ms")
    floor = cli.get("Launcher.spawn(['/bin/true']) in-process", {}).get("median_ms")
    floor_note = f"floor: the run itself in-process {floor} ms ({_ratio(floor, cbw)}x)" \
        if floor and cbw else ""
    out.append(Target("sandbox exec -- /bin/true, warm server, vs bwrap", "<= 5x",
                      f"{warm} ms vs {cbw} ms", _ratio(warm, cbw), 5.0, False,
                      res.get("notes", {}).get("warm_exec", "") or floor_note))
    cold = cli.get("sandbox exec -- /bin/true", {}).get("median_ms")
    imports = res.get("cli_import", {})
    cold_imports = imports.get("+ import the cold exec path", {}).get("median_ms")
    site = imports.get("python -I -c pass", {}).get("median_ms")
    cold_note = (f"floor: the cold path's imports alone {cold_imports} ms "
                 f"({_ratio(cold_imports, cbw)}x; `python -I -c pass` {site} ms), then a "
                 f"monitor's start and the run" if cold_imports and cbw else "")
    out.append(Target("sandbox exec -- /bin/true, cold, vs bwrap", "<= 10x",
                      f"{cold} ms vs {cbw} ms", _ratio(cold, cbw), 10.0, False, cold_note))

    au = res.get("audit", {})
    prog = au.get("c_floor_program_opens_per_s")
    same = _ratio(au.get("sandbox_all_opens_per_s"), prog)
    out.append(Target("audited opens per second vs a minimal C notify loop", ">= 0.7x",
                      f"{au.get('sandbox_all_opens_per_s')}/s vs {au.get('c_floor_opens_per_s')}/s",
                      _ratio(au.get("sandbox_all_opens_per_s"), au.get("c_floor_opens_per_s")),
                      0.7, True, au.get("c_floor_error", "") or (
                          f"{same}x of the C loop answering the same Python program, {prog}/s"
                          if same is not None else "")))

    top = max(sweep) if sweep else None
    peak = max((r["sandbox_per_s"] for r in sweep.values()), default=None)
    big = sweep.get(top, {}) if top else {}
    out.append(Target(f"throughput at {top} concurrent vs peak", ">= 0.9x",
                      f"{big.get('sandbox_per_s')}/s vs peak {peak}/s",
                      _ratio(big.get("sandbox_per_s"), peak), 0.9, True))
    out.append(Target(f"p99 latency at {top} concurrent vs its median", "<= 2x",
                      f"{big.get('sandbox_p99_ms')} ms vs {big.get('sandbox_median_ms')} ms",
                      _ratio(big.get("sandbox_p99_ms"), big.get("sandbox_median_ms")), 2.0,
                      False))

    mem = res.get("memory", [])
    # issue 14's targets count 50 alive; a run without that level is judged at its last
    last = next((r for r in mem if r.get("concurrency") == 50), mem[-1] if mem else {})
    n = last.get("concurrency")
    bwm = last.get("bwrap_mib_per_sandbox")
    for key, label, limit in (("exec_program", "exec'd program", 1.0),
                              ("python_action", "Python action", 4.0)):
        v = last.get(f"{key}_mib_per_sandbox")
        alive = last.get(f"{key}_alive", n)
        out.append(Target(f"memory per live sandbox, {label}, "
                          f"{n if alive == n else f'{alive} of {n}'} alive (PSS)",
                          f"<= {limit:g} MiB (issue 14)", f"{v} MiB vs bwrap {bwm} MiB",
                          v, limit, False))
    for key, label in (("exec_program", "exec'd program"), ("python_action", "Python action")):
        g = last.get(f"{key}_host_growth_kib")
        out.append(Target(f"the monitor host's own growth per live sandbox, {label}, "
                          f"{last.get(f'{key}_alive', n)} alive (private)",
                          "<= 64 KiB (issue 14)", f"{g} KiB", g, 64, False,
                          "" if g is not None else "not measured in this run"))
    proxy, why = res.get("netproxy", {}), res.get("notes", {}).get("netproxy", "")
    hop = proxy.get("bare_relay_mb_per_s")
    out.append(Target("proxied / direct loopback throughput", ">= 0.5x (issue 18)",
                      f"{proxy.get('proxied_mb_per_s')} vs {proxy.get('direct_mb_per_s')} MB/s",
                      proxy.get("throughput_ratio"), 0.5, True, why or (
                          f"floor: the proxy's relay alone, outside any sandbox, {hop} MB/s "
                          f"({proxy.get('bare_relay_ratio')}x)" if hop else "")))
    added = proxy.get("added_connect_p50_ms")
    out.append(Target("proxy's added connect latency, p50", "<= 1 ms (issue 18)",
                      f"{proxy.get('proxied_connect_p50_ms')} vs "
                      f"{proxy.get('direct_connect_p50_ms')} ms",
                      None if added is None else max(added, 0.001), 1.0, False, why))
    ipc = res.get("ipc_messages_per_s")
    out.append(Target("IPC messages per second, child -> parent", ">= 200,000/s",
                      f"{ipc}/s", ipc, 200_000, True))
    return out
