"""What a run costs the trusted side: its share of the monitor's CPU, its broker's, and
the memory that is measurably its own.

Issue 11.7: a sandbox can make the monitor work (long paths, brokered calls,
notifications) while its own CPU meter barely moves. That work is the run's:
it is reported in every RunResult (`monitor_cpu`, `monitor_peak_memory`) and
bounded by `limits.monitor_cpu`, checked by the notification handling as it
works (every `CHECK_EVERY` notifications: the check is a few additions and one
read of the broker's /proc stat).

Issue 14: one monitor process watches many runs, so nothing process-wide
(`os.times`, VmHWM, RUSAGE_SELF) is a run's cost. Per run:
- CPU: the thread CPU (`time.thread_time`) the notification hub spent on the
  run's notifications and broker replies (`AuditLoop.cpu`), plus what the
  shared audit writer spent on its records (`Writer.cpu`), plus the threads of
  its allowlist proxy (`ThreadMeter`), plus its broker process (a process of
  its own: /proc while it lives, rusage once reaped);
- peak memory: what is the run's alone and measurable: its broker's peak RSS
  (ru_maxrss) plus the largest backlog of its queued audit events
  (`Writer.queue_peak` x `EVENT_BYTES`). The shared monitor process's own
  VmHWM is no longer claimed as any run's. A run that makes no notification
  and has no broker reports 0 for both.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from sandbox.monitor.cpu_budget import HZ, stat_ticks

CHECK_EVERY = 64


def child_cpu(pid: int | None) -> float:
    """CPU of a live child (utime + stime from /proc/<pid>/stat); 0 when gone."""
    return stat_ticks(pid, children=False) / HZ if pid else 0.0


class ThreadMeter:
    """CPU of threads that work for one run only (the allowlist proxy's accept loop,
    connections and DNS stub): a live thread is read by its own CPU clock, a finished
    one has added its total. Wrap each such thread's target with `run`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = 0.0
        self._live: dict[int, int] = {}       # thread ident -> its CPU clock id

    def run(self, target: Callable[..., Any], *args: Any) -> Any:
        ident = threading.get_ident()
        try:
            clock = time.pthread_getcpuclockid(ident)
            with self._lock:
                self._live[ident] = clock
        except OSError:
            pass
        try:
            return target(*args)
        finally:
            with self._lock:
                self._live.pop(ident, None)
                self._done += time.thread_time()

    def total(self) -> float:
        with self._lock:
            t = self._done
            for clock in self._live.values():   # registered and not yet finished: alive
                try:
                    t += time.clock_gettime(clock)
                except OSError:
                    pass
            return t


def totals(loop: Any) -> tuple[float, int]:
    """(cpu seconds, peak bytes) of one run's trusted work: its notification loop
    (`notify_loop.AuditLoop`, after `finish()`, or None when the run had none)."""
    if loop is None:
        return 0.0, 0
    from sandbox.audit.writer import EVENT_BYTES
    cpu, peak = float(getattr(loop, "cpu", 0.0)) + float(getattr(loop, "proxy_cpu", 0.0)), 0
    writer = getattr(loop, "writer", None)
    if writer is not None:
        cpu += writer.cpu
        peak += writer.queue_peak * EVENT_BYTES
    ru = getattr(loop, "broker_rusage", None)
    if ru is not None:
        cpu += ru.ru_utime + ru.ru_stime
        peak += ru.ru_maxrss * 1024
    return cpu, peak
