"""What a run costs the trusted side: the monitor's and its broker's CPU and memory.

Issue 11.7: a sandbox can make the monitor work (long paths, brokered calls,
notifications) while its own CPU meter barely moves. That work is the run's:
it is reported in every RunResult (`monitor_cpu`, `monitor_peak_memory`) and
bounded by `limits.monitor_cpu`, checked by the notification loop as it works
(every `CHECK_EVERY` notifications: the cost of a check is two small reads).

The monitor is a process of its own per run (forked or exec'd), so its own
CPU (`os.times`, every thread) is this run's; the broker is its child, read
from /proc while it lives and from its rusage once reaped.
"""
from __future__ import annotations

import os
from typing import Any

from sandbox.monitor.cpu_budget import HZ, stat_ticks

CHECK_EVERY = 64


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def child_cpu(pid: int | None) -> float:
    """CPU of a live child (utime + stime from /proc/<pid>/stat); 0 when gone."""
    return stat_ticks(pid, children=False) / HZ if pid else 0.0


def own_peak_memory() -> int:
    """VmHWM of this process, bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def totals(broker_rusage: Any) -> tuple[float, int]:
    """(cpu seconds, peak bytes) of the monitor and a reaped broker (its rusage or None)."""
    cpu, peak = own_cpu(), own_peak_memory()
    if broker_rusage is not None:
        cpu += broker_rusage.ru_utime + broker_rusage.ru_stime
        peak = max(peak, broker_rusage.ru_maxrss * 1024)
    return cpu, peak
