"""Bursts: N runs started at once, served from the warm pool or started cold, beside bwrap.

A burst is what a pool is for (issue 15.1): a workflow stage fanning out, a
service taking a spike. Each round starts `size` runs of ``/bin/true`` under
one policy at the same instant (a barrier), for each contender in turn, then
pauses so the pool refills in the background as it would between bursts:

- the pooled launcher (the default): each run says whether it took a
  sandbox from its policy's warm pool (`RunResult.pooled`), so its latencies
  split into pool hits and misses (a miss may still take the host's
  policy-agnostic spare);
- the same launcher with pools off (``SANDBOX_SPARE=0`` when its fork server
  starts): every run cold;
- ``bwrap ... /bin/true``, the same number at once.

Latency is from the barrier to the run's result, so a run that waits for a
busy server or core counts that wait, as its caller would.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from sandbox.bench.spawn import BWRAP, _run, peers
from sandbox.bench.stats import Sample


def _burst(fn: Callable[[], bool], size: int) -> list[tuple[float, bool]]:
    """Start `size` calls of `fn` at once: (latency, what fn said) of each."""
    gate = threading.Barrier(size + 1)
    out: list[tuple[float, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        gate.wait()
        t0 = time.perf_counter()
        try:
            flag = fn()
        except BaseException as exc:    # reported after the join, not lost in a thread
            errors.append(exc)
            return
        with lock:
            out.append((time.perf_counter() - t0, flag))
    threads = [threading.Thread(target=one) for _ in range(size)]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} runs of a burst failed, e.g. {errors[0]}")
    return out


def _launcher(spare: bool) -> Any:
    """A launcher whose fork server starts now, with pools on or off."""
    from sandbox.launcher.launcher import Launcher
    old = os.environ.get("SANDBOX_SPARE")
    os.environ["SANDBOX_SPARE"] = "1" if spare else "0"
    try:
        launcher = Launcher()
        launcher.spawn(["/bin/true"], policy="strict")      # starts its fork server
    finally:
        if old is None:
            del os.environ["SANDBOX_SPARE"]
        else:
            os.environ["SANDBOX_SPARE"] = old
    return launcher


def bursts(size: int = 4, rounds: int = 10, policy: str = "strict",
           pause: float = 0.5) -> dict[str, Any]:
    """`rounds` bursts of `size` runs per contender, interleaved round by round."""
    pooled, cold = _launcher(True), _launcher(False)

    def run_with(launcher: Any) -> Callable[[], bool]:
        def fn() -> bool:
            r = launcher.spawn(["/bin/true"], policy=policy)
            if r.status != "ok":
                raise RuntimeError(f"burst run failed: {r.status} {r.reason}")
            return bool(r.pooled)
        return fn

    contenders: dict[str, Callable[[], bool]] = {"pooled": run_with(pooled),
                                                 "cold": run_with(cold)}
    if peers()["bwrap"] is not None:
        def bwrap() -> bool:
            _run(BWRAP)
            return False
        contenders["bwrap"] = bwrap
    got: dict[str, list[tuple[float, bool]]] = {k: [] for k in contenders}
    try:
        for _ in range(rounds):
            for name, fn in contenders.items():
                got[name] += _burst(fn, size)
                time.sleep(pause)           # the pool refills between bursts
    finally:
        pooled.close()
        cold.close()
    hits = [t for t, warm in got["pooled"] if warm]
    misses = [t for t, warm in got["pooled"] if not warm]
    rows = {f"burst of {size}, pool hit": hits, f"burst of {size}, pool miss": misses,
            f"burst of {size}, pools off (SANDBOX_SPARE=0)": [t for t, _ in got["cold"]]}
    if "bwrap" in got:
        rows[f"bwrap, burst of {size}"] = [t for t, _ in got["bwrap"]]
    return {"size": size, "rounds": rounds, "policy": policy,
            "hit_rate": round(len(hits) / max(1, len(got["pooled"])), 3),
            "samples": {k: Sample(k, v).to_dict() for k, v in rows.items() if v}}


def render(res: dict[str, Any]) -> list[str]:
    lines = [f"bursts of {res['size']} runs at once ({res['rounds']} rounds, {res['policy']}, "
             f"/bin/true; pool hit rate {res['hit_rate']:.0%}), median / p95 / p99 ms:"]
    for s in res["samples"].values():
        lines.append(f"  {s['name']:<44} {s['median_ms']:>8.2f} {s['p95_ms']:>8.2f} "
                     f"{s['p99_ms']:>8.2f}  ({s['runs']} runs)")
    return lines
