"""Spawn benchmarks: round trips against peers, `sandbox exec` from the shell, IPC rate.

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


#: The floor of the round trip: launcher -> monitor host -> zygote -> fork+exec, bare.
BARE = "bare hops: launcher -> host -> zygote -> fork+exec /bin/true"


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

    from sandbox.bench.bare import BareHost
    bare = BareHost()
    fns: dict[str, Callable[[], None]] = {
        "sandbox no-op action": action,
        BARE: bare.run,
        "subprocess.run(['/bin/true'])": lambda: _run(["/bin/true"])}
    notes = {}
    for name, cmd in peers().items():
        if cmd is None:
            notes[name] = f"{name} not installed: skipped (apt-get install {name if name != 'bwrap' else 'bubblewrap'})"
        else:
            fns[name] = functools.partial(_run, cmd)
    try:
        samples = interleaved(fns, runs)
    finally:
        bare.close()
        launcher.close()
    notes["layers"] = ", ".join(last.get("layers", []))
    return samples, notes, last.get("timings", {})


def _exec_cmd() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "sandbox")
    return [exe, "exec", "--", "/bin/true"] if os.path.exists(exe) else \
        [sys.executable, "-m", "sandbox", "exec", "--", "/bin/true"]


def _run_env(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False, env=env)


WARM = "sandbox exec -- /bin/true (warm daemon)"
WARM_PY = "sandbox exec -- /bin/true (warm daemon, Python client)"
INPROC = "Launcher.spawn(['/bin/true']) in-process"


def _compiled_client() -> str | None:
    try:
        from sandbox import _native
        return _native.client_path()
    except Exception:
        return None


def cli_exec(runs: int) -> tuple[dict[str, Sample], str]:
    """`sandbox exec -- /bin/true` from the shell, cold (SANDBOX_DAEMON=0) and through a
    daemon started for the measurement (sandbox.thin) with the compiled client (the warm
    figure) and with the Python one, versus bwrap doing the same, and the floor of any
    Python client (`python -I -S -c pass`) in the same interleaved run. All use one
    temporary SANDBOX_HOME. Returns the samples and a note saying why the warm case is
    missing, if it is."""
    import tempfile
    from sandbox.thin import control
    cmd = _exec_cmd()
    compiled = _compiled_client()
    note = ""
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-home-") as home:
        env = {**os.environ, "SANDBOX_HOME": home}
        cold_env = {**env, "SANDBOX_DAEMON": "0"}
        fns: dict[str, Callable[[], None]] = {
            "sandbox exec -- /bin/true": lambda: _run_env(cmd, cold_env)}
        started = False
        try:
            control.start(env)
            started = True
            if compiled is not None:
                fns[WARM] = lambda: _run_env([compiled, *cmd[-3:]], env)
                fns[WARM_PY] = lambda: _run_env(cmd, env)
            else:
                fns[WARM] = lambda: _run_env(cmd, env)
                note = "no compiled client (no C compiler): the Python client's figure"
        except (RuntimeError, OSError) as exc:
            note = f"the daemon did not start: {exc}"
        if peers()["bwrap"]:
            fns["bwrap"] = lambda: _run(BWRAP)
        fns["python -I -S -c pass"] = lambda: _run([sys.executable, "-I", "-S", "-c", "pass"])
        # the run behind the daemon, without a client, a fork or the CLI: its floor
        from sandbox.launcher.launcher import Launcher
        inproc = Launcher()
        def in_process() -> None:
            inproc.spawn(["/bin/true"], workdir=home)
        fns[INPROC] = in_process
        from sandbox.thin import wire
        try:
            samples = interleaved(fns, runs, warmup=2)
            if started:   # the warm figures count only if the daemon really served them
                line = control.status(wire.socket_path(env)) or ""
                served = int(line.split(" served ")[1].split()[0]) if " served " in line else 0
                warm_runs = runs * (2 if WARM_PY in fns else 1)
                if served < warm_runs:
                    samples.pop(WARM, None)
                    samples.pop(WARM_PY, None)
                    note = f"the daemon served {served} of {warm_runs} warm runs: not counted"
            return samples, note
        finally:
            inproc.close()
            if started:
                control.stop(wire.socket_path(env))


def cli_import(runs: int) -> dict[str, Sample]:
    """What `sandbox exec` pays before it runs anything: the interpreter (bare, and with
    `site`), the thin client's imports (the path through a daemon), and the cold path's
    imports (the CLI and the launcher). The first two are the floor of any Python client."""
    py = sys.executable
    return interleaved({
        "python -I -S -c pass": lambda: _run([py, "-I", "-S", "-c", "pass"]),
        "python -I -c pass": lambda: _run([py, "-I", "-c", "pass"]),
        "+ import the thin client": lambda: _run(
            [py, "-I", "-c", "import sandbox.thin.entry, sandbox.thin.client"]),
        "+ import the cold exec path": lambda: _run(
            [py, "-I", "-c", "import sandbox.cli.main as m; m.build_parser(); "
                             "import sandbox.launcher.launcher"]),
    }, runs, warmup=2)


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
