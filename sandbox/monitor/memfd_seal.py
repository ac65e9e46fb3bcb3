"""memfd_create performed by the monitor, so no memfd of a sandbox can be executed.

A memfd lives on the kernel's internal shmem mount: no mount of the view and no
Landlock rule covers it, so a program could copy any binary into one and run it
(execveat(fd, "", AT_EMPTY_PATH), fexecve, execve("/proc/self/fd/N")) where its
policy grants no exec (probe 1, F1). The kernel's own answer, `vm.memfd_noexec
= 2`, is per PID namespace but only global root may write it, and a sandbox
of an unprivileged caller has no such root.

So the filter notifies every memfd_create without MFD_NOEXEC_SEAL (one with it
is allowed in BPF, `syscall_profiles.NOTIFY_GUARDS`), and the monitor behaves
as `vm.memfd_noexec = 2` would: MFD_EXEC is refused (EACCES), anything else is
created here with MFD_NOEXEC_SEAL added and installed in the caller
(SECCOMP_IOCTL_NOTIF_ADDFD, which also answers the call). The kernel then keeps
it non-executable for good (no x bit, F_SEAL_EXEC: chmod cannot add one), and
an exec of it fails with EACCES: race-free, since the flags are a register and
the decision is the kernel's. Everything else about the memfd is as asked
(reading, writing, sealing, PROT_EXEC mappings for JITs, its name).

The name is read from the caller's memory; the install succeeds only while the
call is still pending, so a name read from a thread id that has since named
another process never reaches anybody. The data pages are charged to whoever
writes them (the sandbox's memory cgroup), as before.
"""
from __future__ import annotations

import errno
import os
from typing import Any

from sandbox.isolation import syscall_profiles as sp

MFD_CLOEXEC = 0x1
NAME_MAX = 249          # MFD_NAME_MAX_LEN: NAME_MAX - len("memfd:")
_SEND = 2               # SECCOMP_ADDFD_FLAG_SEND
NR = sp.syscall_number("memfd_create")


def serve(listener: Any, mem: Any, n: Any) -> None:
    """Answer one memfd_create notification `n` (see the module doc)."""
    flags = n.args[1] & sp.MASK32
    if flags & sp.MFD_EXEC:
        listener.respond_error(n.id, errno.EACCES)
        return
    try:
        name = mem.read_cstr(n.pid, n.args[0], NAME_MAX + 1)
    except OSError:
        name = None
    if name is None:
        listener.respond_error(n.id, errno.EFAULT)
        return
    if len(name) > NAME_MAX:
        listener.respond_error(n.id, errno.EINVAL)
        return
    try:
        fd = os.memfd_create(name, flags | sp.MFD_NOEXEC_SEAL | MFD_CLOEXEC)
    except OSError as exc:
        listener.respond_error(n.id, exc.errno or errno.EINVAL)
        return
    try:
        listener.addfd(n.id, fd, _SEND,
                       newfd_flags=os.O_CLOEXEC if flags & MFD_CLOEXEC else 0)
    except OSError as exc:
        if exc.errno != errno.ENOENT:   # ENOENT: the caller is gone, nothing to answer
            listener.respond_error(n.id, exc.errno or errno.EMFILE)
    finally:
        os.close(fd)
