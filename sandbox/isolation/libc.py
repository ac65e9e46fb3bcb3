"""Thin ctypes wrappers for the few system calls the standard library lacks.

Python 3.11 has no `os.unshare`, `mount` or `pivot_root`; these wrappers raise
`OSError` with the real errno so callers can turn them into `SetupError`s that
name the layer.
"""
from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# sched.h
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# sys/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 2

# x86_64 syscall numbers used directly.
SYS_pivot_root = 155
SYS_seccomp = 317


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags),
                       enc(data)), f"mount {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(ctypes.c_long(SYS_pivot_root), new_root.encode(),
                         put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def syscall(number: int, *args: int | bytes | ctypes._SimpleCData) -> int:
    """Raw syscall; integer args are passed as C longs."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _check(_libc.syscall(ctypes.c_long(number), *conv), f"syscall {number}")


def write_file(path: str, text: str) -> None:
    """Write a kernel control file (uid_map, cgroup.procs, ...) in one write(2).

    O_WRONLY without O_CREAT: a missing control file is an error, never a new
    file; one write, because many control files accept exactly one.
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def adopt_stdio(stdin: int, stdout: int, stderr: int) -> None:
    """Make descriptors received for a run (SCM_RIGHTS) this process's 0, 1 and 2,
    and close the received copies."""
    for src, dst in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(src, dst)
    for fd in {stdin, stdout, stderr}:
        if fd > 2:
            os.close(fd)
