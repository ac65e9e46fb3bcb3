"""Killing a process tree that may have escaped its process group, by pidfd.

With a PID namespace, killing PID 1 kills everything (the kernel does it).
Without one (best_effort on a machine without user namespaces) the run's stub
is a child subreaper, so orphans, including double-forked `setsid()` daemons,
are re-parented to it and stay findable as its descendants; the stub kills
them once PID 1 has ended (init.c `kill_tree`; the Python stub with this
module's `signal_listed` over `descendants`). Never the monitor's own
descendants: one monitor watches every run (issue 14).

Never by number: a pid read from /proc or cgroup.procs may be reaped and
handed to an unrelated process before the signal is sent. Every signal goes
through a pidfd that was checked to name the listed process: open pidfds for
a listing, list again, and signal only those listed both times whose pidfd
still holds its number (/proc/self/fdinfo "Pid:"; -1 once reaped). The
process behind a pidfd cannot change; a pidfd of a process gone since is
ESRCH, never another process.
"""
from __future__ import annotations

import os
import signal
from typing import Callable, Iterable, Iterator


def pidfd_holds(fd: int, pid: int) -> bool:
    """True while the process behind pidfd `fd` still owns number `pid` (alive or
    a zombie not yet reaped): then /proc/<pid> and any listing show *it*."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1]) == pid
    except (OSError, ValueError):
        pass
    return False


def open_pidfd(pid: int, check: Callable[[], bool] | None = None) -> int | None:
    """A pidfd for `pid`, or None when it is gone or, while the pidfd is held,
    `check()` (which reads /proc/<pid> or a listing) says it is not ours."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:   # ESRCH gone, EINVAL not a process leader
        return None
    if (check is None or check()) and pidfd_holds(fd, pid):
        return fd
    os.close(fd)
    return None


def send(fd: int, sig: int = signal.SIGKILL) -> bool:
    """pidfd_send_signal; False when the process is already gone."""
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False


def signal_listed(listing: Callable[[], Iterable[int]], sig: int = signal.SIGKILL) -> int:
    """Signal every process `listing()` names (members of a cgroup, descendants of
    a stub), each through a pidfd proved to be that member. Returns how many
    were signalled; call again for members forked meanwhile."""
    fds: dict[int, int] = {}
    for pid in set(listing()):
        try:
            fds[pid] = os.pidfd_open(pid)
        except OSError:
            pass
    sent = 0
    try:
        still = set(listing()) if fds else set()
        for pid, fd in fds.items():
            if pid in still and pidfd_holds(fd, pid) and send(fd, sig):
                sent += 1
    finally:
        for fd in fds.values():
            os.close(fd)
    return sent


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids, from one pass over /proc."""
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
    kids = children_map()
    out: list[int] = []
    stack = [root]
    while stack:
        for child in kids.get(stack.pop(), ()):
            out.append(child)
            stack.append(child)
    return out


def walk(root: int) -> Iterator[tuple[int, list[str]]]:
    """(pid, its thread ids) for `root` and every descendant still alive. Follows
    /proc/<pid>/task/<tid>/children links only: no scan of all of /proc."""
    stack, seen = [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        yield pid, tids
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    stack.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                pass


def count_tasks(root: int) -> int:
    """Tasks (threads included) of `root` and its descendants, as RLIMIT_NPROC
    counts them."""
    return sum(len(tids) for _, tids in walk(root))
