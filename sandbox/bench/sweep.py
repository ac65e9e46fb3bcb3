"""Throughput, latency and memory against concurrency, for the sandbox and for bwrap.

`throughput_sweep` runs `total` no-op actions (and as many `bwrap /bin/true`)
with c of them in flight at once, for each c in `levels`: actions per second
and each run's latency (median, p99); beside them the CPU each run cost, by
process (`cpu.CpuMeter`, and the rate that CPU allows on this machine), and the
bare floor of the same hops without containment (`bare.BareHost`). `memory_sweep` keeps c sandboxes alive
at once (a Python action sleeping; an exec'd `/bin/sleep`; `bwrap sleep`) and
sums the PSS of every process the caller owns (itself and all descendants):
PSS divides shared pages among their sharers, so the sum is what the whole
tree costs the machine.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any, Callable

from sandbox.audit.writer import FLUSH_SECONDS, TRIM_SECONDS
from sandbox.bench.bare import BareHost
from sandbox.bench.smaps import private_kib, rollup
from sandbox.bench.cpu import CpuMeter, cap_per_s
from sandbox.bench.spawn import BWRAP, _run, _workflow
from sandbox.bench.stats import Sample

BWRAP_SLEEP = BWRAP[:-1] + ["/bin/sleep"]
SETTLE = TRIM_SECONDS + 3 * FLUSH_SECONDS   # seconds from the last start to the reading


def _concurrent(fn: Callable[[], None], total: int, concurrency: int) -> tuple[float, Sample]:
    """Run `fn` `total` times, `concurrency` at a time: (runs per second, latencies)."""
    left = [total]
    lock = threading.Lock()
    times: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0 or errors:
                    return
                left[0] -= 1
            t0 = time.perf_counter()
            try:
                fn()
            except BaseException as exc:   # reported after the join, not lost in a thread
                errors.append(exc)
                return
            dt = time.perf_counter() - t0
            with lock:
                times.append(dt)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} runs failed, e.g. {errors[0]}") from errors[0]
    return total / elapsed, Sample(f"c={concurrency}", times)


def throughput_sweep(levels: list[int], total: Callable[[int], int], *, policy: str = "strict",
                     bwrap: bool = True) -> list[dict[str, Any]]:
    from sandbox.launcher.launcher import Launcher
    wf = _workflow("bench.noop")
    rows = []
    for c in levels:
        launcher = Launcher(max_concurrent=c)
        launcher.spawn(wf, policy=policy)   # fork server up, imports done

        def action() -> None:
            r = launcher.spawn(wf, policy=policy)
            if r.status != "ok":
                raise RuntimeError(f"{r.status}: {r.reason}")
        n = total(c)
        try:
            meter = CpuMeter(launcher.forkserver_pid or 0)
            meter.start()
            rate, lat = _concurrent(action, n, c)
            cpu = meter.stop(n)
        finally:
            launcher.close()   # its fork server gone before the next level
        row: dict[str, Any] = {"concurrency": c, "runs": n, "sandbox_per_s": round(rate, 1),
                               "sandbox_median_ms": round(lat.median * 1000, 2),
                               "sandbox_p99_ms": round(lat.p99 * 1000, 2),
                               "cpu_ms_per_run": cpu, "cpu_cap_per_s": cap_per_s(cpu["total"])}
        with BareHost() as bare:   # the floor: the same hops, no containment (bare.py)
            for _ in range(3):
                bare.run()
            frate, flat = _concurrent(bare.run, n, c)
        row.update(bare_per_s=round(frate, 1), bare_median_ms=round(flat.median * 1000, 2),
                   bare_p99_ms=round(flat.p99 * 1000, 2))
        if bwrap:
            brate, blat = _concurrent(lambda: _run(BWRAP), n, c)
            row.update(bwrap_per_s=round(brate, 1), bwrap_median_ms=round(blat.median * 1000, 2),
                       bwrap_p99_ms=round(blat.p99 * 1000, 2))
        rows.append(row)
    return rows


def owned_pss(roots: list[int]) -> int:
    """Bytes of PSS of the processes `roots` and all their descendants (what one
    launcher, or the bwrap processes of one row, own: never another child of this
    process, such as an earlier benchmark's daemon or fork server)."""
    import psutil
    procs = []
    for pid in roots:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    total = 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _live_count(pids_of: Callable[[], int], want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        seen = max(seen, pids_of())
        if seen >= want:
            break
        time.sleep(0.05)
    return seen


def sandboxes_alive() -> int:
    """Sandboxes running a run: a PID 1 that has become the sandbox's init. A pooled
    sandbox's PID 1 waits for its spec as a Python fork (sandbox/sandboxee/stub.py):
    its memory is in the total, but it is no live sandbox to divide it by."""
    import psutil
    from sandbox import _native
    from sandbox.bench.spawn import _is_pid1
    init = os.path.basename(_native.INIT_PATH)

    def running(pid: int) -> bool:
        try:
            return os.path.basename(os.readlink(f"/proc/{pid}/exe")) == init
        except OSError:
            return False
    return sum(1 for c in psutil.Process().children(recursive=True)
               if _is_pid1(c.pid) and running(c.pid))


# Seconds a measured sandbox would live: each is cancelled once read, so this only has to
# outlast starting `c` of them (a sandbox that ended before the reading while the count
# kept the most ever seen made the figure too small: 54 of 64 read as 3.29 MiB).
HOLD = 300.0


def memory_sweep(levels: list[int], *, policy: str = "strict",
                 bwrap: bool = True) -> list[dict[str, Any]]:
    """MiB of PSS per live sandbox, with c alive at once: every process the launcher
    owns (its monitor host, the zygote and spare, each sandbox's stub, init and
    program; issue 14's measure), divided by the sandboxes alive. The fixed processes
    are shared among them, so the figure falls as c grows. The sandboxes are counted
    when their memory is read (`{kind}_alive`: fewer than c when they could not all be
    started within 60 + c seconds). (A difference against the
    tree with none alive is no measure here: the spare stub, a Python fork counted
    whole when alone, becomes the first sandbox's 50-KiB compiled stub, and the
    shared pages of the host and zygote are divided among more processes: with 4
    alive that difference came out negative.)"""
    from sandbox.launcher.launcher import Launcher
    rows = []
    for c in levels:
        row: dict[str, Any] = {"concurrency": c}
        for kind in ("python_action", "exec_program"):
            launcher = Launcher(max_concurrent=c + 2)
            try:
                # warmed by a run of its own kind: a Python action's warm-up left its
                # policy's `limits` pool waiting beside the `view` pool of the programs
                launcher.spawn(_workflow("bench.noop") if kind == "python_action"
                               else ["/bin/true"], policy=policy)
                time.sleep(0.5)     # the warm-up run's monitor gone, its store closed
                target: Any = (_workflow("bench.sleep", seconds=HOLD)
                               if kind == "python_action" else ["/bin/sleep", str(HOLD)])
                host = launcher.forkserver_pid or 0
                idle = private_kib(rollup(host))
                handles = [launcher.start(target, policy=policy) for _ in range(c)]
                try:
                    _live_count(sandboxes_alive, c, 60 + c)
                    # the last ones' set-up settled: their store connections idle and the
                    # writer's heap given back (it trims at most every TRIM_SECONDS); read
                    # 0.3 s after the last start, the host's growth came out 64-70 KiB per
                    # exec'd program against 49-50 from 0.6 s on (2026-12-07)
                    time.sleep(SETTLE)
                    # counted on both sides of the reading, the smaller count kept: a
                    # sandbox that ended meanwhile makes the figure larger, never smaller
                    before = sandboxes_alive()
                    peak = owned_pss([host])
                    live = private_kib(rollup(host))
                    alive = min(before, sandboxes_alive())
                finally:
                    for h in handles:
                        h.cancel()
                    for h in handles:
                        h.wait()
            finally:
                launcher.close()    # its fork server gone before the next baseline
            row[f"{kind}_alive"] = alive
            row[f"{kind}_mib_per_sandbox"] = round(peak / max(1, alive) / 2**20, 3)
            # issue 14: the monitor host's own memory (its private pages) grows by at most
            # 64 KiB per sandbox it watches; it crept up unseen once (78 KiB on 12-07)
            row[f"{kind}_host_growth_kib"] = round((live - idle) / max(1, alive), 1)
        if bwrap:
            procs = [subprocess.Popen(BWRAP_SLEEP + ["30"], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for _ in range(c)]
            try:
                time.sleep(0.3 + c * 0.01)
                peak = owned_pss([p.pid for p in procs])
            finally:
                for p in procs:
                    p.kill()
                for p in procs:
                    p.wait()
            row["bwrap_mib_per_sandbox"] = round(peak / c / 2**20, 3)
        rows.append(row)
    return rows
