"""Opt-in marks of the sandboxee's private memory at each phase of its start.

Set ``SANDBOX_MEMTRACE=1`` in the fork server's environment: the stub and PID 1
then read their own Private_Dirty at each phase and PID 1 reports the figures
with its layer timings (``RunResult.timings["layer.mem.PHASE"]``, in KiB, not
ms). PID 2 inherits every page its lineage dirtied (docs/benchmarks-journal.md), so
these marks say which phase a Python action's private memory comes from.
Off (the default), `mark` is one test of a module constant.
"""
from __future__ import annotations

import os

ON = os.environ.get("SANDBOX_MEMTRACE") == "1"


FD = [-1]   # PID 1's own smaps_rollup, opened before the view and the filters (`pin`)


def pin() -> int:
    """In PID 1, before containment: open its smaps_rollup once (after seccomp an open
    waits for the monitor, which takes the listener only after containment)."""
    FD[0] = os.open("/proc/self/smaps_rollup", os.O_RDONLY | os.O_CLOEXEC)
    return FD[0]


def private_dirty_kib() -> int:
    try:
        if FD[0] >= 0:
            data = os.pread(FD[0], 8192, 0)
        else:
            with open("/proc/self/smaps_rollup", "rb") as f:
                data = f.read()
    except OSError:
        return -1
    at = data.find(b"Private_Dirty:")
    return int(data[at + 14:data.index(b"kB", at)]) if at >= 0 else -1


MARKS: dict[str, float] = {}   # the stub's marks, carried to PID 1 by the fork


def mark(phase: str) -> None:
    if ON:
        MARKS[f"mem.{phase}"] = private_dirty_kib() / 1000
