"""`sandbox bench --service`: the execution service against the direct API, in one run.

The same no-op program (/bin/true under the `default` policy, output captured,
a fresh output directory: what the service asks of the launcher for every run)
is run two ways, interleaved round-robin so the machine's drift hits both:

* direct: `Launcher.spawn` in this process;
* API: `POST /v1/runs?wait=` to a `sandbox serve` this benchmark starts on
  127.0.0.1 (its own state directory, removed after), through sandbox.client.

Reported: p50/p99 submit-to-result latency of each, the HTTP overhead (API
p50 minus direct p50; target <= 2 ms), and runs per second with N at a time
each way (target: the API >= 70% of direct). Nothing is asserted in tests.
"""
from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator
from typing import Any

PROGRAM = ["/bin/true"]
POLICY = "default"


def _pct(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(name: str, times: list[float]) -> dict[str, Any]:
    return {"name": name, "runs": len(times), "p50_ms": round(statistics.median(times) * 1e3, 3),
            "p99_ms": round(_pct(times, 0.99) * 1e3, 3), "mean_ms": round(
                statistics.fmean(times) * 1e3, 3)}


@contextmanager
def served(concurrency: int) -> Iterator[tuple[str, str]]:
    """A `sandbox serve` on a free loopback port; yields (url, admin token)."""
    import httpx
    base = tempfile.mkdtemp(prefix="sandbox-bench-service-")
    state = os.path.join(base, "state")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "sandbox", "serve", "--listen", f"127.0.0.1:{port}",
            "--state", state, "--max-concurrent", str(concurrency)]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = open(os.path.join(base, "serve.log"), "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,
                            env={**os.environ, "SANDBOX_HOME": os.path.join(base, "home")})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sandbox serve did not start: "
                                   + open(os.path.join(base, "serve.log")).read()[-500:])
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        with open(os.path.join(state, "admin.token")) as f:
            yield url, f.read().strip()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def _direct(workdir: str, outputs: str, audit_db: str, concurrency: int) -> Callable[[], None]:
    """The launcher as the service builds it (sandbox.service.app): no run history,
    its own audit store, output captured."""
    from sandbox.launcher.launcher import Launcher
    launcher = Launcher(capture_output=True, max_concurrent=concurrency, history=False,
                        audit_db=audit_db)
    count = [0]
    lock = threading.Lock()

    def run() -> None:
        with lock:
            count[0] += 1
            out = os.path.join(outputs, str(count[0]))
        r = launcher.spawn(PROGRAM, policy=POLICY, workdir=workdir, output_dir=out)
        if r.status != "ok":
            raise RuntimeError(f"direct run failed: {r.status} {r.reason}")
    return run


def _api(url: str, token: str, health: bool = False) -> Callable[[], None]:
    """One run through the API; with `health`, one `GET /healthz` through the same
    client instead (the floor: an HTTP round trip to the server that runs nothing)."""
    from sandbox.client.sync import Client
    local = threading.local()

    def run() -> None:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = Client(url, token)
        if health:
            c.health()
            return
        v = c.run(PROGRAM, policy=POLICY)
        if v.status != "ok":
            raise RuntimeError(f"API run failed: {v.status} {v.reason}")
    return run


def _rate(fn: Callable[[], None], total: int, concurrency: int) -> float:
    """Runs per second of `fn`, `total` times, `concurrency` at a time (the sweep's
    driver: its latencies are not needed here)."""
    from sandbox.bench.sweep import _concurrent
    return _concurrent(fn, total, concurrency)[0]


def run_service(runs: int = 50, total: int = 200, concurrency: int = 4,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """The figures of the service benchmark (see the module docstring)."""
    work = tempfile.mkdtemp(prefix="sandbox-bench-direct-")
    try:
        workdir = os.path.join(work, "in")
        os.mkdir(workdir)
        direct = _direct(workdir, os.path.join(work, "out"), os.path.join(work, "audit"),
                         concurrency)
        with served(concurrency) as (url, token):
            api, health = _api(url, token), _api(url, token, health=True)
            for fn in (direct, api, health, direct, api):   # warm (spares, imports, caches)
                fn()
            log(f"service latency ({runs} interleaved runs each) ...")
            lat: dict[str, list[float]] = {"direct": [], "api": [], "health": []}
            for _ in range(runs):
                for name, fn in (("direct", direct), ("api", api), ("health", health)):
                    t0 = time.perf_counter()
                    fn()
                    lat[name].append(time.perf_counter() - t0)
            log(f"service throughput ({total} runs, {concurrency} at a time, each way) ...")
            rates = {"api": _rate(api, total // 2, concurrency),
                     "direct": _rate(direct, total // 2, concurrency)}
            rates["api"] = (rates["api"] + _rate(api, total - total // 2, concurrency)) / 2
            rates["direct"] = (rates["direct"] + _rate(direct, total - total // 2,
                                                       concurrency)) / 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d, a = _summary("direct Launcher.spawn", lat["direct"]), _summary("API POST ?wait=",
                                                                      lat["api"])
    h = _summary("API GET /healthz", lat["health"])
    overhead = a["p50_ms"] - d["p50_ms"]
    ratio = rates["api"] / rates["direct"]
    return {
        "program": " ".join(PROGRAM), "policy": POLICY, "concurrency": concurrency,
        "latency": {"direct": d, "api": a, "health": h},
        "http_overhead_p50_ms": round(overhead, 3),
        # the floor under the overhead: a round trip through the same client and server
        # that runs nothing (uvicorn, FastAPI and the client's own time)
        "http_floor_p50_ms": h["p50_ms"],
        "runs_per_s": {k: round(v, 1) for k, v in rates.items()},
        "api_over_direct": round(ratio, 3),
        "targets": [
            {"target": "HTTP overhead at p50 (API - direct)", "value": round(overhead, 3),
             "goal": 2.0, "unit": "ms", "met": overhead <= 2.0},
            {"target": "API throughput / direct", "value": round(ratio, 3), "goal": 0.7,
             "unit": "x", "met": ratio >= 0.7},
        ],
    }


def render(res: dict[str, Any]) -> str:
    d, a = res["latency"]["direct"], res["latency"]["api"]
    lines = [f"service benchmark: {res['program']} under '{res['policy']}', "
             f"{d['runs']} interleaved runs each, throughput {res['concurrency']} at a time",
             f"  {'':<24}{'p50 ms':>9}{'p99 ms':>9}{'runs/s':>9}",
             f"  {d['name']:<24}{d['p50_ms']:>9.2f}{d['p99_ms']:>9.2f}"
             f"{res['runs_per_s']['direct']:>9.1f}",
             f"  {a['name']:<24}{a['p50_ms']:>9.2f}{a['p99_ms']:>9.2f}"
             f"{res['runs_per_s']['api']:>9.1f}"]
    h = res["latency"].get("health")
    if h is not None:
        lines.append(f"  {h['name']:<24}{h['p50_ms']:>9.2f}{h['p99_ms']:>9.2f}"
                     f"{'-':>9}  (the floor: an HTTP round trip that runs nothing)")
    for t in res["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(f"  {t['target']}: {t['value']} {t['unit']} (goal "
                     f"{'<=' if t['unit'] == 'ms' else '>='} {t['goal']}) {verdict}")
    return "\n".join(lines)
