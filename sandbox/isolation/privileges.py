"""Privileges: new session, no capabilities, no_new_privs, no stray descriptors.

- `setsid()` detaches from the caller's terminal, so TIOCSTI cannot push
  keystrokes into it (CVE-2017-5226); the seccomp layer also filters TIOCSTI.
- Every capability set is emptied: bounding (so a later execve, even by uid 0
  inside the user namespace, gains nothing), ambient, inheritable, permitted,
  effective; SECBIT_NOROOT is set and locked for the same reason.
- `no_new_privs` makes setuid binaries harmless and is required by Landlock
  and seccomp, which follow.
- Every descriptor except stdio, the IPC socket and the monitor socket is
  closed, so nothing the launcher held leaks in.
"""
from __future__ import annotations

import os

import prctl

from sandbox.errors import SetupError
from sandbox.isolation import libc
from sandbox.isolation.context import ContainContext

PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return int(max(prctl.ALL_CAPS))


def close_fds(keep: set[int]) -> None:
    """Close every descriptor not in `keep` (stdio is always kept)."""
    keep = keep | {0, 1, 2}
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def drop_capabilities() -> None:
    for cap in range(_last_cap() + 1):
        try:
            prctl.capbset_drop(cap)
        except (OSError, ValueError):
            pass  # unknown to this kernel; nothing to drop
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    prctl.securebits.noroot = True
    prctl.securebits.noroot_locked = True
    prctl.securebits.no_setuid_fixup = True
    prctl.securebits.no_setuid_fixup_locked = True
    prctl.cap_inheritable.limit()
    prctl.cap_effective.limit()
    prctl.cap_permitted.limit()


def apply(ctx: ContainContext) -> None:
    try:
        if os.getsid(0) != os.getpid():
            os.setsid()
        prctl.set_no_new_privs(1)
        if ctx.namespaces or os.geteuid() == 0:
            drop_capabilities()
        close_fds({ctx.ipc_fd, ctx.monitor_fd, *ctx.keep_fds,
                   *([ctx.output_fd] if ctx.output_fd is not None else []),
                   *([ctx.cow_fd] if ctx.cow_fd is not None else [])})
    except (OSError, ValueError) as exc:
        raise SetupError("privileges", str(exc)) from None
    ctx.active.append("privileges")
