"""Namespaces: user, PID, mount, IPC, UTS, network, cgroup.

Split in two because Python 3.11 has no `clone()`: `enter` runs in the stub
process (the monitor's child) and unshares every namespace at once, mapping
the caller's uid and gid to themselves inside the new user namespace; the
stub's next fork is PID 1 of the new PID namespace, and that process runs
`apply` as the first step of the containment sequence (hostname, mount
propagation). The caller is mapped to itself (root stays root, uid 1000 stays
1000), as bubblewrap does, so files the sandboxee creates in `${OUTPUT}` belong
to the caller. Capabilities inside the user namespace are dropped later by the
privileges layer.
"""
from __future__ import annotations

import os

from sandbox.errors import SetupError
from sandbox.isolation import apart, libc, limits
from sandbox.isolation.context import ContainContext
from sandbox.isolation.libc import write_file as _write

ALL = (libc.CLONE_NEWUSER | libc.CLONE_NEWPID | libc.CLONE_NEWNS | libc.CLONE_NEWIPC
       | libc.CLONE_NEWUTS | libc.CLONE_NEWCGROUP)


def flags_for(ctx: ContainContext) -> int:
    flags = ALL
    if ctx.policy.network.mode != "host":
        flags |= libc.CLONE_NEWNET
    return flags


def enter(ctx: ContainContext) -> None:
    """In the stub: unshare everything, map uid/gid, bound the per-user resources
    of the new user namespace (limits.py). Raises SetupError."""
    try:
        enter_flags(flags_for(ctx), ctx.outer_uid, ctx.outer_gid)
    except SetupError as exc:
        if exc.layer != "user_ns_limits" or not ctx.policy.best_effort:
            raise
        ctx.skipped["user_ns_limits"] = str(exc)


def enter_flags(flags: int, uid: int, gid: int) -> None:
    """`enter` for a stub made before its policy is known (sandbox.monitor.stubs): the
    namespaces of `flags`, uid and gid mapped to themselves. Raises SetupError naming
    the layer: user_namespace, or user_ns_limits (the bounds could not be written)."""
    caps = limits.user_ns_caps()   # the parent's, read before unshare
    try:
        libc.unshare(flags)
    except OSError as exc:
        raise SetupError("user_namespace",
                         f"cannot create namespaces ({exc.strerror}); user namespaces may be "
                         "disabled (see `sandbox doctor`), or set best_effort = true") from None
    try:
        map_self(uid, gid)
    except OSError as exc:
        raise SetupError("user_namespace", f"cannot write the uid/gid map: {exc}") from None
    try:
        limits.bound_user_ns(caps)
    except SetupError as exc:
        raise SetupError("user_ns_limits", str(exc)) from None


def map_self(uid: int, gid: int) -> None:
    """Map uid and gid to themselves in the user namespace just entered.

    setgroups must be denied first, or an unprivileged process may not write
    its gid_map (a user namespace could otherwise drop supplementary groups
    that guard files: CVE-2014-8989)."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")


def apply(ctx: ContainContext) -> None:
    """In PID 1: finish the namespace layer (hostname; no mount propagation out)."""
    if os.getpid() != 1 and not apart.IN_CHILD:   # or PID 1's setup child (apart.py)
        raise SetupError("pid_namespace", f"sandboxee is PID {os.getpid()}, expected 1")
    if ctx.prebuilt is not None:   # done before the run, with the view's first part
        ctx.active.append("namespaces")
        return
    try:
        libc.sethostname(ctx.hostname)
        # Nothing mounted in here may propagate back to the host.
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    except OSError as exc:
        raise SetupError("namespaces", str(exc)) from None
    ctx.active.append("namespaces")


