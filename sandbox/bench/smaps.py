"""A process's memory as /proc/PID/smaps and smaps_rollup count it, in KiB.

Shared by the memory benchmark (`sandbox.bench.memory`: PSS and private pages
of every process the launcher owns, by role) and the fork floor
(`sandbox.bench.fork_floor`: the private pages of one fork of the warm template).
Each reading of a process that is gone, or not readable, is empty.
"""
from __future__ import annotations

import os


def rollup(pid: int) -> dict[str, int]:
    """The process's /proc/PID/smaps_rollup figures in KiB ({} if it is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def pss_kib(pid: int) -> int:
    """The process's PSS in KiB (0 if it is gone or unreadable)."""
    return rollup(pid).get("Pss", 0)


def private_kib(figures: dict[str, int]) -> int:
    return figures.get("Private_Dirty", 0) + figures.get("Private_Clean", 0)


def private_by_mapping(pid: int) -> dict[str, int]:
    """Private KiB of one process by kind of mapping: "heap" (brk heap), "anon"
    (anonymous mappings: pymalloc arenas, thread stacks, malloc arenas), "stack",
    "interpreter" (the python binary or libpython: its data segment), "other"."""
    out: dict[str, int] = {}
    kind = "other"
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split(None, 6)
                if head and "-" in head[0] and not head[0].endswith(":"):
                    name = head[5].strip() if len(head) > 5 else ""
                    base = os.path.basename(name)
                    kind = ("heap" if name == "[heap]" else "stack" if name == "[stack]"
                            else "anon" if not name
                            else "interpreter" if base.startswith(("python", "libpython"))
                            else "other")
                elif head and head[0] in ("Private_Dirty:", "Private_Clean:"):
                    out[kind] = out.get(kind, 0) + int(head[1])
    except (OSError, ValueError, IndexError):
        pass
    return out
