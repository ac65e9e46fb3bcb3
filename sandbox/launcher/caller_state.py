"""What a program started directly would inherit from its caller, captured for the
run's spec (protocol.CallerWire; applied in PID 1 by sandbox.sandboxee.inherit).

WHY: `sandbox exec -- PROGRAM` must behave like `PROGRAM`. A direct exec keeps the
caller's ignored signals (nohup, `trap '' HUP`) and signal mask, umask, nice value,
I/O priority, oom_score_adj and soft resource limits. The cold path's monitor is the
CLI's child and inherited most of these, but the sandbox's init reset every signal
(probe4 H6: a nohup'd run died of SIGHUP, 129); a warm run's monitor and sandbox are
forks of the daemon, so all of them were the daemon's (probe4 H8, M4: umask 0022 for a
caller's 077, nice 0 for 7, the daemon's stack limit). The warm fork reads them from
the thin client (the same uid: /proc/PID and prlimit), named by its SO_PEERCRED pid.
"""
from __future__ import annotations

import os
import resource
import signal
from typing import Callable

from sandbox import group_signals
from sandbox.isolation import libc
from sandbox.protocol import CallerWire

# a Python caller's or thin client's SIG_IGN of these says nothing of its own caller's
_PYTHONS_OWN = sum(1 << (s - 1) for s in group_signals.PYTHONS_OWN)
_NEVER = (1 << (signal.SIGKILL - 1)) | (1 << (signal.SIGSTOP - 1))
# Soft limits carried (the policy's [limits] then set theirs over them, as cold)
RLIMITS = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "NOFILE", "AS", "NPROC", "MEMLOCK",
           "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")
IOPRIO_WHO_PROCESS = 1


def capture(pid: int | None = None) -> CallerWire:
    """The caller's state: process `pid` (the warm path's client) or this one (None).
    A value that cannot be read (the client already gone) is left None: the run then
    keeps its own, as before."""
    target = pid or os.getpid()
    status = _status(target)
    got = CallerWire(sig_ignored=_hex(status.get("SigIgn")) & ~_PYTHONS_OWN & ~_NEVER)
    if pid is None:
        got.sig_blocked = sum(1 << (int(s) - 1) for s in signal.pthread_sigmask(
            signal.SIG_BLOCK, []))
    else:
        got.sig_blocked = _hex(status.get("SigBlk"))
    got.sig_blocked &= ~_NEVER
    if "Umask" in status:
        got.umask = int(status["Umask"], 8)
    got.nice = _maybe(lambda: os.getpriority(os.PRIO_PROCESS, target))
    got.ioprio = _maybe(lambda: libc.syscall("ioprio_get", IOPRIO_WHO_PROCESS, target))
    got.oom_score_adj = _maybe(lambda: int(_read(f"/proc/{target}/oom_score_adj")))
    for name in RLIMITS:
        res = getattr(resource, "RLIMIT_" + name, None)
        if res is None:
            continue
        soft = _maybe(lambda: resource.prlimit(target, res)[0])
        if soft is not None:
            got.rlimits[name] = soft
    return got


def _status(pid: int) -> dict[str, str]:
    try:
        text = _read(f"/proc/{pid}/status")
    except OSError:
        return {}
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _hex(value: str | None) -> int:
    try:
        return int(value or "0", 16)
    except ValueError:
        return 0


def _maybe(read: Callable[[], int]) -> int | None:
    try:
        return read()
    except (OSError, ValueError):
        return None
