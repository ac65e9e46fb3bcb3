"""Spawn benchmarks: round trips against peers, throughput, IPC rate, memory.

Every contender runs on the same machine in the same invocation, interleaved
round-robin, so the ratios compare like with like.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from sandbox.bench.stats import Sample, interleaved

BWRAP = ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "/bin/true"]
FIREJAIL = ["firejail", "--quiet", "--noprofile", "/bin/true"]


def _workflow(action: str, **params: Any):
    from sandbox.workflow import Workflow
    return Workflow.from_dict({"name": f"bench {action}", "imports": ["sandbox.bench.actions"],
                               "stages": [{"actions": [{"name": action, "params": params}]}]})


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def peers() -> dict[str, list[str] | None]:
    return {"bwrap": BWRAP if shutil.which("bwrap") else None,
            "firejail": FIREJAIL if shutil.which("firejail") else None}


def round_trips(runs: int, policy: str = "strict") -> tuple[dict[str, Sample], dict[str, str],
                                                             dict[str, float]]:
    """No-op Python action with every layer of `policy`, versus the peers' /bin/true."""
    from sandbox.launcher.launcher import Launcher
    launcher = Launcher()
    wf = _workflow("bench.noop")
    last: dict[str, Any] = {}

    def action() -> None:
        r = launcher.spawn(wf, policy=policy)
        if r.status != "ok":
            raise RuntimeError(f"benchmark run failed: {r.status} {r.reason}")
        last["timings"], last["layers"] = r.timings, r.layers

    fns: dict[str, Callable[[], object]] = {"sandbox no-op action": action,
           "subprocess.run(['/bin/true'])": lambda: _run(["/bin/true"])}
    notes = {}
    for name, cmd in peers().items():
        if cmd is None:
            notes[name] = f"{name} not installed: skipped (apt-get install {name if name != 'bwrap' else 'bubblewrap'})"
        else:
            fns[name] = functools.partial(_run, cmd)
    samples = interleaved(fns, runs)
    notes["layers"] = ", ".join(last.get("layers", []))
    return samples, notes, last.get("timings", {})


def cli_exec(runs: int) -> dict[str, Sample]:
    """`sandbox exec -- /bin/true` from the shell, versus bwrap doing the same."""
    exe = os.path.join(os.path.dirname(sys.executable), "sandbox")
    cmd = [exe, "exec", "--", "/bin/true"] if os.path.exists(exe) else \
        [sys.executable, "-m", "sandbox", "exec", "--", "/bin/true"]
    fns: dict[str, Callable[[], object]] = {"sandbox exec -- /bin/true": lambda: _run(cmd)}
    if peers()["bwrap"]:
        fns["bwrap"] = lambda: _run(BWRAP)
    return interleaved(fns, runs, warmup=2)


def cli_import(runs: int) -> dict[str, Sample]:
    """What `sandbox exec` pays before it runs anything: the interpreter, then the
    imports on the exec path (the CLI and the launcher)."""
    py = sys.executable
    return interleaved({
        "python -I -c pass": lambda: _run([py, "-I", "-c", "pass"]),
        "+ import the exec path": lambda: _run(
            [py, "-I", "-c", "import sandbox.cli.main as m; m.build_parser(); "
                             "import sandbox.launcher.launcher"]),
    }, runs, warmup=2)


def throughput(total: int, concurrency: int, policy: str = "strict") -> float:
    """Sandboxed no-op actions per second, `concurrency` at a time."""
    from sandbox.launcher.launcher import Launcher
    launcher = Launcher(max_concurrent=concurrency)
    wf = _workflow("bench.noop")
    launcher.spawn(wf, policy=policy)
    left = [total]
    lock = threading.Lock()
    failures: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            r = launcher.spawn(wf, policy=policy)
            if r.status != "ok":
                failures.append(r.reason)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} runs failed, e.g. {failures[0]}")
    return total / elapsed


def ipc_rate(n: int, policy: str = "strict") -> float:
    """Messages per second from child to parent, timed at the parent between
    the first and the last message received."""
    from sandbox.launcher.launcher import Launcher
    from sandbox.launcher.session import Budget
    launcher = Launcher(budget=Budget(max_messages=n + 1000))
    stamps: list[float] = []
    launcher.on("bench.tick", lambda m, info: stamps.append(time.perf_counter())
                if m.payload in (0, n - 1) else None)
    r = launcher.spawn(_workflow("bench.messages", n=n), policy=policy)
    if r.status != "ok" or len(stamps) != 2:
        raise RuntimeError(f"IPC benchmark failed: {r.status} {r.reason}")
    return (n - 1) / (stamps[1] - stamps[0])


def memory_per_sandbox(count: int, policy: str = "strict") -> dict[str, float]:
    """Launcher memory (USS) per live sandbox, with `count` sandboxes alive at once."""
    import psutil
    from sandbox.launcher.launcher import Launcher
    me = psutil.Process()
    launcher = Launcher(max_concurrent=count)
    launcher.spawn(_workflow("bench.noop"), policy=policy)  # fork server up, imports done
    wf = _workflow("bench.sleep", seconds=5.0 + count * 0.03)
    base = me.memory_full_info().uss
    failures: list[str] = []

    def one() -> None:
        r = launcher.spawn(wf, policy=policy)
        if r.status != "ok":
            failures.append(r.reason)
    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60 + count * 0.5
    peak, alive = base, 0
    while time.monotonic() < deadline:
        n = sum(1 for c in me.children(recursive=True) if _is_pid1(c.pid))
        peak = max(peak, me.memory_full_info().uss)
        alive = max(alive, n)
        if n >= count:
            break
        time.sleep(0.05)
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{len(failures)} sandboxes failed, e.g. {failures[0]}")
    return {"sandboxes": count, "alive_at_once": alive,
            "launcher_uss_mib": round(base / 2**20, 2), "peak_uss_mib": round(peak / 2**20, 2),
            "per_sandbox_kib": round((peak - base) / max(1, alive) / 1024, 1)}


def _is_pid1(pid: int) -> bool:
    """A sandboxee: PID 1 of its own PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return line.split()[-1] == "1"
    except OSError:
        return False
    return False
