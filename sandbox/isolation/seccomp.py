"""The seccomp layer: compile once, install raw, last in the containment sequence.

`compile_program` turns the policy's `[syscalls]` (profile, allow, deny,
on_violation) plus the set of syscalls the monitor wants to be told about into
a classic-BPF program (bytes of `struct sock_filter`). Programs are cached per
(policy syscalls, notify set), so a warm fork server compiles each policy once
and its forked sandboxees only install it.

`apply` installs the program with the raw `seccomp(SECCOMP_SET_MODE_FILTER)`
syscall. When a listener is wanted (a file audit, or `on_violation = "kill"`)
it passes SECCOMP_FILTER_FLAG_NEW_LISTENER and leaves the returned descriptor
in `ctx.listener_fd`. **The sandboxee entry code must hand that descriptor to
the monitor (SCM_RIGHTS) and close it before making any notified syscall**:
a task waiting on a notification that only its own listener could answer
waits forever.

Flags:
- TSYNC: the sandboxee is single-threaded here (it was just forked), so
  TSYNC changes nothing in the normal case; it is passed anyway so that a
  thread started by some earlier layer or library could never run unfiltered.
  With a listener, TSYNC needs TSYNC_ESRCH (the return value is the fd).
- WAIT_KILLABLE_RECV (5.19+): once the monitor has received a notification,
  only fatal signals interrupt the waiting syscall. Without it, a signal
  (Go's SIGURG preemption, timers) makes the kernel drop the notification and
  the syscall restart, so the monitor sees it twice. Dropped when unsupported.
- never SPEC_ALLOW (keep the speculative-store-bypass mitigation) and never
  LOG (no kernel log noise; the monitor reports violations itself).

What a denied syscall gets (`on_violation`):
- ``errno``: EPERM (clone3 always gets ENOSYS so that libc falls back to clone).
  Where the run has a listener anyway (an audit or a private network), the
  refusal goes through it (`errno_via_notify`): the monitor answers EPERM
  itself and counts the call by name (`RunResult.denied_syscalls`, a hint),
  so a program that fails on "Operation not permitted" is told why.
- ``kill``: SECCOMP_RET_USER_NOTIF to the listener; the monitor names the call
  with `sandbox.monitor.seccomp_notify.violation_of` and kills the sandbox.
  Compiled without a listener (`kill_via_notify=False`) it is
  SECCOMP_RET_KILL_PROCESS, which the monitor sees only as SIGSYS.
Foreign architectures (i386 `int 0x80`, x32) are always KILL_PROCESS.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
from typing import Callable

from sandbox.errors import SetupError
from sandbox.isolation import libc
from sandbox.isolation import seccomp_bpf as bpf
from sandbox.isolation import syscall_profiles as sp
from sandbox.isolation.context import ContainContext
from sandbox.policy.model import SyscallPolicy

# linux/seccomp.h
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3
FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_TSYNC_ESRCH = 1 << 4
FLAG_WAIT_KILLABLE_RECV = 1 << 5

# Syscalls that name a path to open, create, change or execute: what a file
# audit wants to see. The audit engine may pass its own set to compile_program.
FILE_SYSCALLS: frozenset[str] = frozenset({
    "open", "openat", "openat2", "creat", "truncate", "execve", "execveat",
    "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
    "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat",
    "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat",
    "utime", "utimes", "utimensat", "futimesat",
    # probe 1, F8: a pathname UNIX socket's bind creates a file; xattrs change one
    "bind", "setxattr", "lsetxattr", "setxattrat", "removexattr", "lremovexattr",
    "removexattrat", "file_setattr",
})


# With `[audit] files = "all"` the monitor also sees lookups that only look:
# stat, access and readlink (in "denied" mode they would cost a round trip each
# for little: the kernel layers refuse them the same way, silently).
STAT_SYSCALLS: frozenset[str] = frozenset({
    "stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
    "readlink", "readlinkat",
    # probe 1, F8: lookups by name beyond stat
    "getxattr", "lgetxattr", "getxattrat", "listxattr", "llistxattr", "listxattrat",
    "statfs", "chdir", "inotify_add_watch", "name_to_handle_at", "file_getattr",
})
# Denied whenever files are audited: io_uring performs opens and reads that never
# pass through the filter, so they would escape the monitor (see docs/audit.md).
AUDIT_DENY: tuple[str, ...] = ("io_uring_setup", "io_uring_enter", "io_uring_register")


# With a private network (mode none or loopback) the monitor mediates what could
# reach a pathname UNIX socket outside the sandbox: seccomp cannot read a sockaddr
# and Landlock (ABI 7) cannot restrict pathname connects. sendto is notified only
# with a destination address (syscall_profiles.NOTIFY_GUARDS).
NET_SYSCALLS: frozenset[str] = frozenset({"connect", "sendto", "sendmsg", "sendmmsg"})
# With mode "none" only: an IPv4/IPv6 TCP bind, which Landlock refuses, is refused by
# the monitor with the same EACCES and recorded, so that the run says why a server
# could not listen (a new-user probe: a test suite's local server got a bare EACCES).
# Notified only with an INET address length (syscall_profiles.NOTIFY_ONLY_WHEN).
BIND_SYSCALLS: frozenset[str] = frozenset({"bind"})


# Wherever there is a listener: memfds are made by the monitor with MFD_NOEXEC_SEAL,
# so that no file without a path in the view can be executed (sandbox/monitor/memfd_seal.py).
SEAL_SYSCALLS: frozenset[str] = frozenset({"memfd_create"})


def wants_listener(on_violation: str, audit_files: str, network: str) -> bool:
    """Does the run hand the monitor a notification listener? With an audit, a private
    network or kill-mode violations (every built-in policy has one)."""
    return audit_files != "none" or on_violation == "kill" or network != "host"


def notify_set_for(audit_files: str, network: str = "host",
                   on_violation: str = "errno") -> frozenset[str]:
    """The syscalls to route to the monitor for `policy.audit.files`, the network mode
    and `syscalls.on_violation`."""
    net = NET_SYSCALLS if network != "host" else frozenset()
    if network == "none":
        net = net | BIND_SYSCALLS
    if wants_listener(on_violation, audit_files, network):
        net = net | SEAL_SYSCALLS
    if audit_files == "none":
        return net
    if audit_files == "denied":
        return FILE_SYSCALLS | net
    if audit_files == "all":
        return FILE_SYSCALLS | STAT_SYSCALLS | net
    raise ValueError(f"unknown audit.files value {audit_files!r}")


def audited_syscalls(syscalls: SyscallPolicy, audit_files: str) -> SyscallPolicy:
    """`syscalls` with io_uring denied when files are audited (what `warm` compiles and the
    monitor evaluates)."""
    if audit_files == "none" or set(AUDIT_DENY) <= set(syscalls.deny):
        return syscalls
    return SyscallPolicy(profile=syscalls.profile, allow=syscalls.allow,
                         deny=tuple(sorted(set(syscalls.deny) | set(AUDIT_DENY))),
                         on_violation=syscalls.on_violation)


def _action_map(on_violation: str, kill_via_notify: bool,
                errno_via_notify: bool = False) -> Callable[[str], int]:
    if on_violation == "errno":
        deny = bpf.RET_USER_NOTIF if errno_via_notify else bpf.ret_errno(errno.EPERM)
    elif on_violation == "kill":
        deny = bpf.RET_USER_NOTIF if kill_via_notify else bpf.RET_KILL_PROCESS
    else:
        raise ValueError(f"unknown on_violation {on_violation!r}")
    table = {sp.ALLOW: bpf.RET_ALLOW, sp.NOTIFY: bpf.RET_USER_NOTIF, sp.DENY: deny,
             sp.ENOSYS: bpf.ret_errno(errno.ENOSYS)}
    return table.__getitem__


def table_for(syscalls: SyscallPolicy, notify: frozenset[str] | set[str] = frozenset(),
              network: str = "host") -> sp.Table:
    """The resolved table; the monitor evaluates the same one to name violations.

    `network` = "allowlist": socket families are only those the mode needs (UNIX, INET,
    INET6, NETLINK_ROUTE: `sp.SOCKET_STRICT`) whatever the profile, unless the policy's
    `syscalls.allow` names `socket` itself."""
    # a file audit notifies every bind (a UNIX socket's file: probe 1, F8); only mode
    # "none" without one notifies just the INET-length binds it refuses
    whole = frozenset(notify) & BIND_SYSCALLS if frozenset(notify) & (
        FILE_SYSCALLS - BIND_SYSCALLS) else frozenset()
    return sp.resolve(syscalls.profile, tuple(sorted(set(syscalls.allow))),
                      tuple(sorted(set(syscalls.deny))), frozenset(notify),
                      families_only=network == "allowlist", whole=whole)


@functools.lru_cache(maxsize=64)
def _compile(syscalls: SyscallPolicy, notify: frozenset[str], kill_via_notify: bool,
             network: str = "host", errno_via_notify: bool = False) -> bytes:
    table = table_for(syscalls, notify, network)
    return bpf.compile_table(table, _action_map(syscalls.on_violation, kill_via_notify,
                                                errno_via_notify))


def compile_program(syscalls: SyscallPolicy, *, notify: frozenset[str] | set[str] = frozenset(),
                    kill_via_notify: bool = False, network: str = "host",
                    errno_via_notify: bool = False) -> bytes:
    """The classic-BPF program for `syscalls` (cached). Raises ValueError on bad names."""
    canon = SyscallPolicy(profile=syscalls.profile, allow=tuple(sorted(set(syscalls.allow))),
                          deny=tuple(sorted(set(syscalls.deny))),
                          on_violation=syscalls.on_violation)
    return _compile(canon, frozenset(notify), bool(kill_via_notify),
                    "allowlist" if network == "allowlist" else "host", bool(errno_via_notify))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1  # no /proc: the sandboxee was just forked and is single-threaded


def install(program: bytes, *, listener: bool = False, tsync: bool = True,
            wait_killable: bool = True) -> int | None:
    """seccomp(SECCOMP_SET_MODE_FILTER) with `program`; returns the listener fd if asked.

    Needs no_new_privs (or CAP_SYS_ADMIN). Raises OSError with the kernel's errno.
    """
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    base = FLAG_NEW_LISTENER if listener else 0
    attempts = []
    for killable in ((True, False) if (listener and wait_killable) else (False,)):
        for sync in ((True, False) if tsync else (False,)):
            flags = base
            if killable:
                flags |= FLAG_WAIT_KILLABLE_RECV
            if sync:
                flags |= FLAG_TSYNC | (FLAG_TSYNC_ESRCH if listener else 0)
            attempts.append((flags, sync))
    last: OSError | None = None
    for flags, sync in attempts:
        if not sync and tsync and _thread_count() > 1:
            continue  # never install on one thread of several
        try:
            ret = libc.syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            last = exc
            continue
        return ret if listener else None
    raise last or OSError(errno.EINVAL, "seccomp: no accepted flag combination")


def actions_available() -> set[str]:
    """The actions this kernel supports (from /proc/sys/kernel/seccomp/actions_avail)."""
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            return set(f.read().split())
    except OSError:
        return set()


def _ensure_no_new_privs() -> None:
    import prctl
    if not prctl.get_no_new_privs():
        # The privileges layer sets it; if it was skipped (best_effort), setting it
        # here only makes the sandboxee weaker at gaining privileges, never stronger.
        prctl.set_no_new_privs(1)


def warm(syscalls: SyscallPolicy, audit_files: str = "none", network: str = "host") -> bytes:
    """Compile what `apply` will install, ahead of the fork (fork server, monitor).

    The first compile of a profile costs milliseconds (name resolution); a
    cached one about 15 us. Raises ValueError for bad names or values.
    """
    return compile_program(audited_syscalls(syscalls, audit_files),
                           notify=notify_set_for(audit_files, network, syscalls.on_violation),
                           kill_via_notify=syscalls.on_violation == "kill", network=network,
                           errno_via_notify=errno_via_notify(syscalls, audit_files, network))


def errno_via_notify(syscalls: SyscallPolicy, audit_files: str, network: str) -> bool:
    """Do errno-mode refusals go to the monitor? Where there is a listener anyway."""
    return syscalls.on_violation == "errno" and wants_listener("errno", audit_files, network)


def apply(ctx: ContainContext) -> None:
    syscalls = ctx.policy.syscalls
    try:
        # compiled by PID 1's setup child (sandbox/isolation/apart.py), else here
        program = ctx.seccomp_program or warm(syscalls, ctx.audit_files,
                                              ctx.policy.network.mode)
    except ValueError as exc:
        raise SetupError("seccomp", str(exc)) from None
    want_listener = wants_listener(syscalls.on_violation, ctx.audit_files,
                                   ctx.policy.network.mode)
    try:
        _ensure_no_new_privs()
        fd = install(program, listener=want_listener)
    except OSError as exc:
        hint = ""
        if want_listener and "user_notif" not in actions_available():
            hint = " (this kernel has no seccomp user notification)"
        raise SetupError("seccomp", f"cannot install the filter: {exc.strerror}{hint}") from None
    ctx.listener_fd = fd
    ctx.active.append(f"seccomp:{syscalls.profile}")
