"""CPU per run, by process: the throughput floor of a warm launcher.

Two cores give at most ``2000 / (ms of CPU per run)`` runs per second, whatever
the concurrency. This measures, around a stretch of runs of one `Launcher`, the
CPU its processes used (utime + stime, from /proc): the launcher (this process,
every thread), the monitor host (the fork server: its loop thread and its other
threads, i.e. the notification hub, the audit writer, the end workers), the
zygote, and what the zygote reaped (each run's stub, PID 1 and program).
``python -m sandbox.bench.cpu [RUNS] [--exec]`` prints it for warm runs one at a
time (docs/benchmarks-journal.md, "Where a warm run's CPU goes").
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")
PARTS = ("launcher", "host_loop", "host_threads", "zygote", "sandbox")


def _stat(path: str) -> tuple[int, int, int, int]:
    with open(path) as f:
        s = f.read()
    fields = s[s.rfind(")") + 2:].split()
    return int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


@dataclass
class CpuMeter:
    """`start()`, the runs, `stop(runs)`: ms of CPU per run by part (PARTS)."""
    host_pid: int

    def _snap(self) -> dict[str, float]:
        host = self.host_pid
        out = dict.fromkeys(PARTS, 0.0)
        out["launcher"] = time.process_time() * _TICK
        for tid in os.listdir(f"/proc/{host}/task"):
            u, s, _, _ = _stat(f"/proc/{host}/task/{tid}/stat")
            out["host_loop" if int(tid) == host else "host_threads"] += u + s
        with open(f"/proc/{host}/task/{host}/children") as f:
            kids = [int(p) for p in f.read().split()]
        for kid in kids:
            u, s, cu, cs = _stat(f"/proc/{kid}/stat")
            out["zygote"] += u + s
            out["sandbox"] += cu + cs   # the stubs it reaped, with PID 1 and the program
        return out

    def start(self) -> None:
        self._before = self._snap()

    def stop(self, runs: int) -> dict[str, float]:
        time.sleep(0.3)   # the last runs' ends (cgroup removal, reaping) are counted
        after = self._snap()
        per = {k: round(1000 * (after[k] - self._before[k]) / _TICK / runs, 2) for k in PARTS}
        per["total"] = round(sum(per[k] for k in PARTS), 2)
        return per


def cap_per_s(ms_per_run: float, cpus: int | None = None) -> float | None:
    """Runs per second the machine's CPUs allow at this much CPU per run."""
    if ms_per_run <= 0:
        return None
    return round((cpus or os.cpu_count() or 1) * 1000 / ms_per_run, 1)


def measure(runs: int, target: str = "action", policy: str = "strict",
            warmup: int = 8) -> dict[str, float]:
    """CPU per run by process over `runs` warm runs of one Launcher, one at a time: a
    no-op Python action (`target` = "action") or `/bin/true` ("exec")."""
    from sandbox.bench.spawn import _workflow
    from sandbox.launcher.launcher import Launcher
    what: object = _workflow("bench.noop") if target == "action" else ["/bin/true"]
    with Launcher() as launcher:
        def one() -> None:
            r = launcher.spawn(what, policy=policy)   # type: ignore[arg-type]
            if r.status != "ok":
                raise RuntimeError(f"run failed: {r.status} {r.reason}")
        for _ in range(warmup):
            one()
        meter = CpuMeter(launcher.forkserver_pid or 0)
        meter.start()
        for _ in range(runs):
            one()
        return meter.stop(runs)


def main(argv: list[str] | None = None) -> int:
    """``python -m sandbox.bench.cpu [RUNS] [--exec]``: the split of one warm run's CPU."""
    import sys
    args = list(sys.argv[1:] if argv is None else argv)
    target = "exec" if "--exec" in args else "action"
    nums = [a for a in args if a != "--exec"]
    runs = 100
    if nums:
        try:
            runs = int(nums[0]) if len(nums) == 1 else -1
        except ValueError:
            runs = -1
    if runs < 1:
        print("sandbox.bench.cpu: usage: python -m sandbox.bench.cpu [RUNS >= 1] [--exec]",
              file=sys.stderr)
        return 2
    per = measure(runs, target)
    load = os.getloadavg()[0]
    print(f"CPU per warm strict run ({target}, {runs} runs, load {load:.1f}), ms: "
          + ", ".join(f"{k} {v}" for k, v in per.items())
          + f" -> at most {cap_per_s(per['total'])} runs/s on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
