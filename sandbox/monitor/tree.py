"""Killing a process tree that may have escaped its process group.

With a PID namespace, killing PID 1 kills everything (the kernel does it).
Without one (best_effort on a machine without user namespaces) the monitor is
a child subreaper, so orphans, including double-forked `setsid()` daemons,
are re-parented to it and stay findable as its descendants; this module
walks /proc for them and kills until none is left.
"""
from __future__ import annotations

import os
import signal


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the comm field may hold spaces and parens: ppid follows the last ')'
        fields = stat[stat.rfind(b")") + 2:].split()
        out.setdefault(int(fields[1]), []).append(int(name))
    return out


def descendants(root: int) -> list[int]:
    kids = _children_map()
    out: list[int] = []
    stack = [root]
    while stack:
        for child in kids.get(stack.pop(), ()):
            out.append(child)
            stack.append(child)
    return out


def kill_descendants(root: int, *, rounds: int = 50) -> int:
    """SIGKILL every descendant of `root` (not root itself), repeating while new ones appear."""
    killed = 0
    for _ in range(rounds):
        pids = descendants(root)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        reap_all()
    return killed


def reap_all() -> None:
    """Reap every exited child without blocking (the subreaper's duty)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def count_tasks(root: int) -> int:
    """Tasks (threads included) of `root` and its descendants, as RLIMIT_NPROC
    counts them. Walks /proc/<pid>/task/<tid>/children: no scan of all of /proc."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        total += len(tids)
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    stack.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                pass
    return total
