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

import _prctl  # type: ignore[import-not-found]  # python-prctl's C module
import prctl

from sandbox.errors import SetupError
from sandbox.isolation import libc
from sandbox.isolation.context import ContainContext

PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _last_cap() -> int:
    """The highest capability this kernel knows, read raw: a text-mode file object
    runs the io stack's Python, each line of it a page of a Python action's program
    (its PID 1 drops the capabilities, and the program is a fork of it)."""
    try:
        fd = os.open("/proc/sys/kernel/cap_last_cap", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return int(os.read(fd, 32))
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return int(max(prctl.ALL_CAPS))


def close_fds(keep: set[int]) -> None:
    """Close every descriptor not in `keep` (stdio is always kept): close_range(2)
    over the gaps between the kept ones (os.closerange)."""
    low = 0
    for fd in sorted(keep | {0, 1, 2}):
        if fd < 0:
            continue
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _FD_END)


_FD_END = 0x7FFFFFFF   # past any descriptor (RLIMIT_NOFILE may be lower than an open one)
# every set bit of these is set and locked: no root, no setuid fixup (module doc)
_SECUREBITS = (_prctl.SECBIT_NOROOT | _prctl.SECBIT_NOROOT_LOCKED
               | _prctl.SECBIT_NO_SETUID_FIXUP | _prctl.SECBIT_NO_SETUID_FIXUP_LOCKED)


def drop_capabilities() -> None:
    """The bounding and ambient sets emptied, SECBIT_NOROOT and NO_SETUID_FIXUP set and
    locked, then the inheritable, effective and permitted sets emptied (one capset).
    Through python-prctl's C module, not its Python wrappers (each of those a page of
    the program's, above)."""
    for cap in range(_last_cap() + 1):
        try:
            _prctl.prctl(_prctl.PR_CAPBSET_DROP, cap)
        except (OSError, ValueError):
            pass  # unknown to this kernel; nothing to drop
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _prctl.prctl(_prctl.PR_SET_SECUREBITS,
                 _prctl.prctl(_prctl.PR_GET_SECUREBITS) | _SECUREBITS)
    _prctl.set_caps([], [], [], _ALL_CAPS, _ALL_CAPS, _ALL_CAPS)


_ALL_CAPS = list(prctl.ALL_CAPS)


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
