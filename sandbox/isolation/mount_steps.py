"""The mount table's data: the steps of a sandbox's view, and a table computed ahead.

`sandbox.isolation.mounts` computes the table (`mount_table`, `prepare`) and
performs it (`apply`); the context (`ContainContext.mount_table`) carries a
prepared one across the fork to the mount and Landlock layers. The data lives
here, apart from both, so that neither imports the other for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sandbox.policy.plan import FsPlan


@dataclass(frozen=True)
class Step:
    """One step of the view, in the order `apply` performs it. The monitor host
    computes the table and PID 1 receives these very objects, pickled in its
    `Pid1Start` (sandbox.monitor.runspec.pid1_start)."""
    kind: str = ""       # one of KINDS
    path: str = ""       # the path inside the view (no symlinks in it)
    source: str = ""     # bind: host path; link: the symlink's text
    is_dir: bool = True
    attrs: int = 0       # bind: MOUNT_ATTR_* to set on the bound subtree
    exec: bool = False   # tmp: allow exec

# What a step may be; a table that names anything else is refused before it is used.
KINDS = frozenset({"tmp", "proc", "dev", "bind", "output", "overlay", "rebind", "link",
                   "mask"})


class Prepared(NamedTuple):
    """The mount table of one plan, and each bound rule's real path on the host as
    the kernel resolved it then (`real`). Every later step acts on those real paths
    with RESOLVE_NO_SYMLINKS (the mount layer's binds, Landlock's rules), so a component
    swapped for a link afterwards fails closed instead of being followed."""
    plan: FsPlan
    steps: list[Step]
    real: dict[str, str]
