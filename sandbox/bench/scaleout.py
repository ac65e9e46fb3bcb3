"""`sandbox bench --workers 1,2,3`: runs per second through Dramatiq on Redis
against the in-process queue, measured in the same run on this machine.

Every part is real and local: a redis-server (Debian's) on a free loopback
port with its append-only file fsync'd on every write (the setting
docs/scaling.md asks for), `sandbox serve --broker` and N `sandbox worker`
processes, each with its own state directory. The in-process figure is a
plain `sandbox serve` with the same number of sandbox slots as one worker.

Figures:
- runs/s: no-op runs (`true`, policy strict) submitted by 8 client threads,
  from the first submit to the last result;
- submit->result p50/p99: the server's own timestamps (created -> finished);
- dispatch p50/p99: the broker's work per run under that saturating load:
  the server's claim and message (`claim_ms`) plus the worker's time in Redis
  for the run (taking the lease, its reports), from each result's `dispatch`
  field; the time a message waits for a free slot is queueing, not overhead;
- cancel: a `sleep 60` run on a worker, from the cancel request to its final
  status (the worker polls the run's cancel key every 250 ms);
- idle->start: one run submitted to idle workers, submit to the worker's
  start, repeated; Dramatiq's consumer backs off when idle, up to
  `sandbox worker`'s 50 ms (its `worker_timeout`).
"""
from __future__ import annotations

import concurrent.futures
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SLOTS = 2          # sandboxes per worker (and of the in-process server)


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def _load(server: Any, runs: int) -> dict[str, float]:
    with server.client() as c:
        def submit(i: int) -> str:
            r = c.post("/v1/runs", json={"argv": ["true"], "policy": "strict"})
            r.raise_for_status()
            return str(r.json()["id"])
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(runs)))
        views = []
        for rid in ids:
            while True:
                v = c.get(f"/v1/runs/{rid}", params={"wait": 30}).json()
                if v["status"] not in ("queued", "running"):
                    views.append(v)
                    break
        wall = time.monotonic() - t0
        lat = [(v["finished_at"] - v["created_at"]) * 1000 for v in views]
        bad = sum(v["status"] != "ok" for v in views)
        dispatch = [float(d["server"]) + float(d["worker"]) for v in views
                    if isinstance(d := (v.get("result") or {}).get("dispatch"), dict)]
    out = {"runs": runs, "failed": bad, "runs_per_s": runs / wall,
           "p50_ms": statistics.median(lat), "p99_ms": _pct(lat, 99)}
    if dispatch:
        out["dispatch_p50_ms"] = statistics.median(dispatch)
        out["dispatch_p99_ms"] = _pct(dispatch, 99)
        parts = [v["result"]["dispatch"] for v in views
                 if isinstance((v.get("result") or {}).get("dispatch"), dict)]
        out["dispatch_server_p50_ms"] = statistics.median(float(p["server"]) for p in parts)
        out["dispatch_worker_p50_ms"] = statistics.median(float(p["worker"]) for p in parts)
    return out


def _idle_to_start(server: Any, n: int = 5) -> float:
    vals = []
    with server.client() as c:
        for _ in range(n):
            time.sleep(1.0)              # let the consumers back off to their longest wait
            t0 = time.time()
            rid = c.post("/v1/runs", json={"argv": ["true"], "policy": "strict"}).json()["id"]
            c.get(f"/v1/runs/{rid}", params={"wait": 30})
            v = c.get(f"/v1/runs/{rid}").json()
            if v.get("started_at"):
                vals.append((v["started_at"] - t0) * 1000)
    return statistics.median(vals) if vals else float("nan")


def _rtt(url: str, n: int = 200) -> float:
    """The floor under the broker's figures: one Redis round trip (PING) from
    Python on this machine, now. The broker's work per run is a handful of
    round trips (take the lease, the report batches, done)."""
    import redis
    r = redis.Redis.from_url(url)
    vals = []
    for _ in range(n):
        t0 = time.perf_counter()
        r.ping()
        vals.append((time.perf_counter() - t0) * 1000)
    r.close()
    return statistics.median(vals)


def _cancel_latency(server: Any, n: int = 5) -> float:
    """Cancel of a run on a remote worker: from the cancel request to the run's
    final status, with the sandbox killed (median of n)."""
    vals = []
    with server.client() as c:
        for _ in range(n):
            rid = c.post("/v1/runs", json={"argv": ["sleep", "60"],
                                           "policy": "strict"}).json()["id"]
            deadline = time.monotonic() + 60
            while not any(lease["run_id"] == rid and lease["lease_ttl_ms"]
                          for lease in c.get("/v1/workers").json()["leases"]):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            t0 = time.monotonic()
            c.post(f"/v1/runs/{rid}/cancel")
            while c.get(f"/v1/runs/{rid}").json()["status"] in ("queued", "running"):
                time.sleep(0.02)
            vals.append((time.monotonic() - t0) * 1000)
    return statistics.median(vals)


def measure(workers: list[int], runs: int = 200,
            log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from sandbox.service.scaleout.local import Redis, Server, Worker
    res: dict[str, Any] = {"slots_per_worker": SLOTS, "runs": runs, "cores": os.cpu_count(),
                           "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-scale-") as tmp:
        root = Path(tmp)
        log(f"in-process queue, {SLOTS} slots, {runs} no-op runs")
        srv = Server(root / "inproc", ["--max-concurrent", str(SLOTS)]).start()
        try:
            _load(srv, min(20, runs))                       # warm the fork server
            res["in_process"] = _load(srv, runs)
            res["in_process"]["idle_to_start_ms"] = _idle_to_start(srv)
        finally:
            srv.stop()
        redis = Redis(dir=str(root / "redis")).start()
        try:
            res["redis_rtt_p50_ms"] = _rtt(redis.url)
            res["broker"] = {}
            for n in workers:
                log(f"broker, {n} worker(s) x {SLOTS} slots, {runs} no-op runs")
                srv = Server(root / f"broker{n}", ["--broker", redis.url]).start()
                ws = [Worker(redis.url, root / f"w{n}-{i}", f"bench{i}",
                             ["--concurrency", str(SLOTS)]).start() for i in range(n)]
                try:
                    _load(srv, min(20, runs))
                    fig = _load(srv, runs)
                    fig["idle_to_start_ms"] = _idle_to_start(srv)
                    if n == workers[0]:
                        res["cancel_p50_ms"] = _cancel_latency(srv)
                    res["broker"][str(n)] = fig
                finally:
                    for w in ws:
                        w.stop()
                    srv.stop()
        finally:
            redis.stop()
    base = res["in_process"]["runs_per_s"]
    for fig in res["broker"].values():
        fig["vs_in_process"] = fig["runs_per_s"] / base
    return res


def render(res: dict[str, Any]) -> str:
    rows = [("in-process", res["in_process"])] + [
        (f"broker, {n} worker(s)", f) for n, f in res["broker"].items()]
    lines = [f"scale-out: {res['runs']} no-op runs (strict), {res['slots_per_worker']} "
             f"sandbox slots per worker, {res['cores']} cores, everything on this machine",
             f"{'':24} {'runs/s':>8} {'x in-proc':>9} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'dispatch p50/p99 ms':>20} {'idle->start ms':>15}"]
    for name, f in rows:
        disp = (f"{f['dispatch_p50_ms']:.2f}/{f['dispatch_p99_ms']:.2f}"
                if "dispatch_p50_ms" in f else "-")
        lines.append(f"{name:24} {f['runs_per_s']:8.1f} {f.get('vs_in_process', 1.0):9.2f} "
                     f"{f['p50_ms']:8.1f} {f['p99_ms']:8.1f} {disp:>20} "
                     f"{f['idle_to_start_ms']:15.1f}")
    if "redis_rtt_p50_ms" in res:
        lines.append(f"floor: one Redis round trip from Python here: "
                     f"{res['redis_rtt_p50_ms']:.3f} ms p50; load average "
                     f"{res.get('load', float('nan')):.1f} when measured")
    if "cancel_p50_ms" in res:
        c = res["cancel_p50_ms"]
        lines.append(f"target: cancel of a remote run <= 1 s at p50: {c / 1000:.2f} s "
                     f"({'PASS' if c <= 1000 else 'MISS'})")
    p50s = [f["dispatch_p50_ms"] for _, f in rows if "dispatch_p50_ms" in f]
    if p50s:
        worst = max(p50s)
        lines.append(f"target: dispatch overhead <= 3 ms at p50: {worst:.2f} ms "
                     f"({'PASS' if worst <= 3 else 'MISS'})")
    return "\n".join(lines)
