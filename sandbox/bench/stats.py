"""Small statistics for benchmarks: medians and p95 over repeated timings."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Mapping


@dataclass
class Sample:
    name: str
    times: list[float]  # seconds

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.times)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    @property
    def p95(self) -> float:
        return self.quantile(0.95)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def to_dict(self) -> dict:
        """Summary plus every timing (ms), so `--plot` can draw the distribution."""
        return {"name": self.name, "runs": len(self.times),
                "median_ms": round(self.median * 1000, 3), "p95_ms": round(self.p95 * 1000, 3),
                "p99_ms": round(self.p99 * 1000, 3),
                "times_ms": [round(t * 1000, 3) for t in self.times]}


def measure(name: str, fn: Callable[[], object], runs: int, warmup: int = 3) -> Sample:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Sample(name, times)


def settle(limit: float = 0.25) -> None:
    """Wait, up to `limit` seconds, until no task but this one is runnable on the
    machine (/proc/loadavg's runnable count). A contender may leave work behind after it
    returned -- the `sandbox exec` daemon's next fork copying its pages, a fork server
    refilling its pool, a run's directory being removed -- and the next contender
    measured must not pay for it on the 2-core machine."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return
        if running <= 1:
            return
        time.sleep(0.001)


def interleaved(fns: Mapping[str, Callable[[], object]], runs: int, warmup: int = 3) -> dict[str, Sample]:
    """Measure several contenders round-robin, so drift in the machine's load
    hits all of them alike (a fair side-by-side in one run), each from a settled
    machine (`settle`: no contender pays for what the one before left running)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {name: Sample(name, []) for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            settle()
            t0 = time.perf_counter()
            fn()
            out[name].times.append(time.perf_counter() - t0)
    return out
