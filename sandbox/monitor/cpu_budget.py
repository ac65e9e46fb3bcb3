"""The sandbox's CPU, counted for the whole sandbox and limited as a total.

Why not RLIMIT_CPU alone: it is per process, so N workers get N times the
budget, and the kernel's rusage misses every process still alive when PID 1
exits (the kernel reaps them without charging anyone). So the monitor meters
the sandbox as one:

- a cgroup where this machine gives one (`cpuacct` in v1, `cpu.stat` in v2,
  which needs no controller): exact, teardown included;
- otherwise the sum of utime+stime+cutime+cstime over the run's stub and every
  process below it (/proc/<pid>/task/<tid>/children: PID 1 and all it forked;
  orphans re-parent to PID 1, or to the stub, the run's subreaper, without a PID
  namespace). Never from the monitor's own pid: one monitor watches every run
  (issue 14). A reaped child's time moves into its reaper's cutime, so the sum
  only loses what processes killed at teardown used since the last sample.

The monitor samples when the budget could first be spent: `remaining / CPUs`
seconds from now (no process set can burn faster), at least every MIN_TICK and,
for the fallback's accounting, at most every MAX_TICK. RLIMIT_CPU stays as the
per-process backstop (limits.py): a total budget is never looser than it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from sandbox.monitor.tree import pidfd_holds, walk

MIN_TICK = 0.01   # seconds: the overshoot is at most CPUs x this (plus the kill)
MAX_TICK = 0.25   # seconds: the fallback's accounting granularity at teardown
HZ = os.sysconf("SC_CLK_TCK")
_CPUS = os.cpu_count() or 1


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of every process below `root` (not root itself), their reaped
    children included (`tree.walk`)."""
    return sum(stat_ticks(pid) for pid, _ in walk(root) if pid != root) / HZ


def run_cpu_seconds(stub: int, stub_fd: int) -> float | None:
    """CPU seconds of a run: its stub (with all it reaped) and every process below it.
    None unless the stub's pidfd still holds its number after the walk: once the stub
    is reaped, `stub` may name another process's tree."""
    total = (stat_ticks(stub) / HZ) + tree_cpu_seconds(stub)
    return total if pidfd_holds(stub_fd, stub) else None


def stat_ticks(pid: int, children: bool = True) -> int:
    """Clock ticks of `pid` from /proc/<pid>/stat: utime + stime, plus its reaped
    children's (cutime + cstime) when `children`; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    # comm may hold spaces and parens: fields resume after the last ')'; utime,
    # stime, cutime, cstime are fields 14-17 (1-based), i.e. 11-14 after state.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return sum(int(x) for x in fields[11:15 if children else 13])
    except (ValueError, IndexError):
        return 0


@dataclass
class CpuBudget:
    """One run's CPU meter and, when `limit` is set, its budget.

    `read` returns the sandbox's CPU seconds so far (None when unreadable);
    `mechanism` is what RunResult.limits_applied["cpu"] says."""
    read: Callable[[], float | None]
    limit: float | None
    mechanism: str                      # "cgroup-v1" | "cgroup-v2" | "monitor"
    exact: bool                         # a cgroup: teardown included without sampling
    used: float = 0.0                   # the highest reading so far
    exceeded: bool = False
    samples: int = field(default=0, repr=False)

    @classmethod
    def for_run(cls, limit: float | None, cgroup: object | None, stub: int,
                stub_fd: int | None) -> "CpuBudget":
        """The cgroup's meter when the run has a cpuacct cgroup, else the /proc sum
        from the run's stub (`stub_fd`: its pidfd; None, the stub is gone: no reading)."""
        dirs = getattr(cgroup, "dirs", {}) or {}
        if cgroup is not None and "cpuacct" in dirs:
            return cls(cgroup.cpu_usage, limit,  # type: ignore[attr-defined]
                       f"cgroup-{dirs['cpuacct'][0]}", exact=True)
        return cls(lambda: None if stub_fd is None else run_cpu_seconds(stub, stub_fd),
                   limit, "monitor", exact=False)

    def wants_ticks(self) -> bool:
        return self.limit is not None or not self.exact

    def next_tick(self) -> float:
        """Seconds until the next sample is due."""
        if self.limit is None:
            return MAX_TICK
        remaining = self.limit - self.used
        return min(MAX_TICK, max(MIN_TICK, remaining / _CPUS))

    def sample(self, *, final: bool = False) -> bool:
        """Read the meter; True when the budget is spent (the caller kills the tree).
        The `final` reading, after the sandbox ended, only counts: a run that ended by
        itself was not stopped by the budget, whatever its last burst cost."""
        self.samples += 1
        got = self.read()
        if got is not None and got > self.used:
            self.used = got
        if not final and self.limit is not None and self.used >= self.limit:
            self.exceeded = True
        return self.exceeded
