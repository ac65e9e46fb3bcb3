"""Memory of live sandboxes: PSS of every process the launcher owns, by role, beside bwrap.

Issue 14 item 4 measures a sandbox's cost as the proportional set size (PSS:
private pages plus each shared page divided by its sharers) of every process
the launcher owns while `count` sandboxes are alive at once, divided by
`count`. PSS is the honest sum for forked processes: a page shared by 50
forks counts 1/50 in each, so the total is the memory the machine really
spends. The same figure is taken for `bwrap` in the same run.

Roles are read from the process tree (`role_of`): the fork server, the
monitor(s), the stub, PID 1 (sandbox-init once the program started), the
program (PID 2 and below), and anything else (broker, spare). With the one
monitor host of issue 14 the "forkserver" is that host (it supervises every
run) and the "monitor", the stubs' parent, is its zygote: one process each
for all the sandboxes, so their KiB per sandbox shrink as `count` grows.

Beside PSS, each role's *private* pages (mapped by that process alone) are
summed: for a Python action's program they are the pages of the warm template
that the sandboxee's lineage (stub, PID 1, PID 2: all forks) wrote to, and so
copied. One program's private pages are also split by mapping (the
interpreter's heap, anonymous memory: pymalloc arenas, thread stacks; the
interpreter's own data segment), which says where an optimisation has to act.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.bench import fork_floor
from sandbox.bench.smaps import private_by_mapping, private_kib, rollup


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _nspid_is_1(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return line.split()[-1] == "1" and len(line.split()) > 2
    except OSError:
        pass
    return False


@dataclass
class Tally:
    """PSS (KiB) and process count per role."""
    kib: dict[str, int] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    private: dict[str, int] = field(default_factory=dict)   # KiB mapped by that process only
    sample: dict[str, int] = field(default_factory=dict)    # a pid per role

    def add(self, role: str, kib: int, private: int = 0, pid: int = 0) -> None:
        self.kib[role] = self.kib.get(role, 0) + kib
        self.count[role] = self.count.get(role, 0) + 1
        self.private[role] = self.private.get(role, 0) + private
        self.sample.setdefault(role, pid)

    @property
    def total(self) -> int:
        return sum(self.kib.values())


def tally_sandbox_tree(root: int) -> Tally:
    """Every process under `root` (the launcher; root itself not counted), by role:
    a process whose NSpid ends in 1 is PID 1; its descendants are the program;
    its parent is the stub; the stub's parent is a monitor; a direct child of
    root is the fork server; other descendants of root are 'other'."""
    from sandbox.monitor.tree import children_map
    kids = children_map()
    t = Tally()
    below: list[int] = list(kids.get(root, []))
    seen: set[int] = set()
    pid1s: list[int] = []
    order: list[int] = []
    while below:
        pid = below.pop()
        if pid in seen:
            continue
        seen.add(pid)
        order.append(pid)
        below += kids.get(pid, [])
        if _nspid_is_1(pid):
            pid1s.append(pid)
    parent = {c: p for p, cs in kids.items() for c in cs}
    roles: dict[int, str] = {}
    for p1 in pid1s:
        roles[p1] = "pid1"
        stack = list(kids.get(p1, []))
        while stack:
            c = stack.pop()
            roles[c] = "program"
            stack += kids.get(c, [])
        stub = parent.get(p1)
        if stub is not None and stub in seen:
            roles[stub] = "stub"
            mon = parent.get(stub)
            if mon is not None and mon in seen and mon not in roles:
                roles[mon] = "monitor"
    for pid in order:
        role = roles.get(pid)
        if role is None:
            role = "forkserver" if parent.get(pid) == root and "python" in _comm(pid) \
                else "other"
        figures = rollup(pid)
        t.add(role, figures.get("Pss", 0), private_kib(figures), pid)
    return t


def _wait_for(pred: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def sandbox_pss(count: int, target: Any, policy: str = "default",
                hold: float = 60.0) -> dict[str, Any]:
    """PSS per role with `count` sandboxes of `target` alive at once, launched by one
    Launcher in this process. `target` must stay alive for `hold` seconds."""
    from sandbox.launcher.launcher import Launcher
    launcher = Launcher(max_concurrent=count + 2)
    try:
        launcher.spawn(["/bin/true"], policy=policy)   # fork server up, imports done
        launcher.spawn(["/bin/true"], policy=policy)
        time.sleep(1.0)   # the runs' ends done, the spare and pools refilled
        host = launcher.forkserver_pid or 0
        host_idle = private_kib(rollup(host))
        handles = [launcher.start(target, policy=policy) for _ in range(count)]
        # a PID 1 that became its sandbox's init: a pooled one waiting for its run is in
        # the total, but no live sandbox to divide it by (it made 54 of 50 here)
        from sandbox.bench.sweep import sandboxes_alive as alive
        me = os.getpid()
        _wait_for(lambda: alive() >= count, 60 + count)
        time.sleep(1.0)   # let set-up faults settle
        t = tally_sandbox_tree(me)
        n = alive()
        host_live = private_kib(rollup(host))
        program = private_by_mapping(t.sample["program"]) if "program" in t.sample else {}
        for h in handles:
            h.cancel()
        for h in handles:
            h.wait()
    finally:
        launcher.close()
    return {"alive": n, "total_kib": t.total, "by_role_kib": t.kib, "count": t.count,
            "private_by_role_kib": t.private, "program_private_by_mapping_kib": program,
            "per_sandbox_kib": round(t.total / max(1, n), 1),
            # issue 14: the monitor's own memory grows by <= 64 KiB per sandbox it watches
            # (the host's private pages, idle against `n` alive)
            "host_private_idle_kib": host_idle, "host_private_live_kib": host_live,
            "host_growth_per_sandbox_kib": round((host_live - host_idle) / max(1, n), 1)}


def _under(pid: int, root: int) -> bool:
    for _ in range(64):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            pid = int(stat[stat.rfind(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == root:
            return True
        if pid <= 1:
            return False
    return False


def bwrap_pss(count: int, bwrap: str = "bwrap") -> dict[str, Any] | None:
    """The same figure for `bwrap --ro-bind / / --unshare-all --die-with-parent sleep`."""
    import shutil
    path = shutil.which(bwrap)
    if path is None:
        return None
    procs = [subprocess.Popen([path, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                               "--unshare-all", "--die-with-parent", "sleep", "120"],
                              stdin=subprocess.DEVNULL)
             for _ in range(count)]
    try:
        me = os.getpid()
        _wait_for(lambda: sum(1 for p in os.listdir("/proc") if p.isdigit()
                              and _comm(int(p)) == "sleep" and _under(int(p), me)) >= count, 60)
        time.sleep(1.0)
        t = tally_sandbox_tree(me)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    return {"alive": count, "total_kib": t.total,
            "per_sandbox_kib": round(t.total / max(1, count), 1)}


def measure(count: int = 50) -> dict[str, Any]:
    """Exec'd program (`sleep`), Python action, and bwrap, in one run."""
    from sandbox.bench.spawn import _workflow
    out: dict[str, Any] = {"count": count}
    out["exec"] = sandbox_pss(count, ["sleep", "120"])
    out["action"] = sandbox_pss(count, _workflow("bench.sleep", seconds=120.0))
    out["bwrap"] = bwrap_pss(count)
    try:
        out["fork_floor"] = fork_floor.measure()
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        out["fork_floor"] = {"error": str(exc)[:200]}
    return out


ROLES = ("forkserver", "monitor", "stub", "pid1", "program", "other")


def render(res: dict[str, Any]) -> list[str]:
    """The figures as `sandbox bench` prints them: KiB per live sandbox, by role."""
    lines = [f"memory (PSS of every process the launcher owns, {res['count']} sandboxes "
             "alive at once, KiB per sandbox):"]
    for kind, label in (("exec", "exec'd program (sleep)"), ("action", "Python action")):
        r = res[kind]
        n = max(1, r["alive"])
        roles = ", ".join(f"{role} {r['by_role_kib'][role] / n:.0f}" for role in ROLES
                          if role in r["by_role_kib"])
        lines.append(f"  {label:<26} {r['per_sandbox_kib']:>8.0f}  ({roles})")
        private = ", ".join(f"{role} {r['private_by_role_kib'][role] / n:.0f}" for role in ROLES
                            if r.get("private_by_role_kib", {}).get(role))
        if private:
            lines.append(f"  {'':<26} {'':>8}  private: {private}")
        where = r.get("program_private_by_mapping_kib") or {}
        if where:
            lines.append(f"  {'':<26} {'':>8}  one program's private pages: " + ", ".join(
                f"{kind} {kib}" for kind, kib in sorted(where.items(), key=lambda kv: -kv[1])))
    if res.get("bwrap"):
        lines.append(f"  {'bwrap (sleep)':<26} {res['bwrap']['per_sandbox_kib']:>8.0f}")
    for kind, label in (("exec", "exec'd program"), ("action", "Python action")):
        g = res[kind].get("host_growth_per_sandbox_kib")
        if g is not None:
            lines.append(f"  the monitor host's own growth per live sandbox ({label}): {g:.0f} KiB "
                         f"of private memory ({res[kind]['host_private_idle_kib']} KiB idle, "
                         f"{res[kind]['host_private_live_kib']} KiB with {res[kind]['alive']} "
                         f"alive): {'PASS' if g <= 64 else 'MISS'} (goal <= 64 KiB, issue 14)")
    floor = res.get("fork_floor")
    if floor:
        lines.append("  floor, a fork of the warm template outside any sandbox (private KiB; "
                     "sandbox.bench.fork_floor): " + ", ".join(f"{k} {v}" for k, v in floor.items()))
    return lines


def main() -> None:   # python -m sandbox.bench.memory [count] [--json]
    import json
    import sys
    from sandbox.bench.count_arg import count_arg
    res = measure(count_arg(sys.argv[1:], 50, "python -m sandbox.bench.memory [COUNT] [--json]",
                            flags=("--json",)))
    if "--json" in sys.argv:
        print(json.dumps(res, indent=1))
    else:
        print("\n".join(render(res)))


if __name__ == "__main__":
    threading.current_thread().name = "bench-memory"
    main()
