"""The one module that makes raw system calls: one libc handle, numbers by name.

Every call the standard library lacks goes through here, so that

- there is one ``ctypes.CDLL`` handle in the package (tests/test_libc.py
  fails if another module opens one or calls ``syscall(2)`` with a number);
- a syscall is named, never numbered: `syscall_number` looks the name up in
  the table of the running architecture (sandbox/isolation/syscall_table.py),
  and an architecture without a table fails with ENOSYS instead of calling a
  wrong number (the seccomp filter is x86_64-only for the same reason);
- every wrapper raises ``OSError`` with the real errno, so callers turn it
  into a `SetupError` that names their layer.

Where the standard library has the call it is used instead: ``os.pidfd_open``,
``socket.sethostname``, ``os.unshare``/``os.setns`` (3.12; the 3.11 venv
falls back to libc here), ``os.ST_*``, ``os.eventfd``. ``os.access(...,
dir_fd=, effective_ids=)`` exists too, but answers only True/False, and the
broker needs the errno (EROFS vs EACCES): hence `faccessat`.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import sys
from typing import TYPE_CHECKING, Callable, Union, cast

from sandbox.isolation.syscall_table import X86_64

if TYPE_CHECKING:
    from ctypes import _CArgObject, _NamedFuncPointer, _SimpleCData

    #: What `syscall` passes on: ints become C longs; the rest is passed as is.
    Arg = Union[int, bytes, None, "_SimpleCData[int]", "_SimpleCData[bytes]", "_CArgObject"]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# Each function looked up now, in the warm template: the first `_libc.NAME` makes its
# function pointer in ctypes' Python (CDLL.__getattr__) and stores it on the handle,
# ~100 KiB of page copies in each stub that unshares or PID 1 that calls it
# (docs/benchmarks-journal.md); looked up here, every fork finds it made.
for _name in ("unshare", "setns", "mount", "umount2", "prctl", "faccessat",
              "statx", "process_vm_readv"):
    getattr(_libc, _name, None)


class _HoldingGil(ctypes._CFuncPtr):  # type: ignore[name-defined,misc]
    """A C function called with the GIL held (as `os.fork()` calls fork), errno kept."""
    _flags_ = (ctypes._FUNCFLAG_CDECL | ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]
               | ctypes._FUNCFLAG_USE_ERRNO)  # type: ignore[attr-defined]
    _restype_ = ctypes.c_int


_raw_fork = _HoldingGil(("fork", _libc))

#: Syscall tables by machine (`uname -m`); the project supports x86_64 only. (Read
#: with os.uname(): `platform` costs every process of ours ~1 ms to import.)
TABLES: dict[str, dict[str, int]] = {"x86_64": X86_64}
ARCH = os.uname().machine

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
UMOUNT_NOFOLLOW = 8

# fcntl.h / linux/openat2.h / linux/pidfd.h
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EACCESS = 0x200
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT = 0x02, 0x04, 0x10
PIDFD_THREAD = os.O_EXCL
STATX_MNT_ID = 0x1000


def syscall_number(name: str) -> int:
    """The number of syscall `name` on the running architecture; OSError(ENOSYS)
    when the architecture has no table or the table no such call."""
    table = TABLES.get(ARCH)
    nr = table.get(name) if table is not None else None
    if nr is None:
        raise OSError(errno.ENOSYS, f"{name}: no syscall number known on {ARCH}")
    return nr


def _check(ret: int, what: str | None = None, filename: str | None = None) -> int:
    """`ret`, or OSError with the errno: its strerror prefixed by `what` when given
    (like the messages of the layers), or plain with `filename` (like os.open)."""
    if ret < 0:
        err = ctypes.get_errno()
        if filename is not None or what is None:
            raise OSError(err, os.strerror(err), filename)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return int(ret)


def bound_syscall(name: str) -> Callable[..., int]:
    """syscall(2) of `name` as one callable of ctypes arguments the caller converted
    once, for a hot loop (landlock_around.add_around: a rule per entry of a directory).
    It returns the raw result: -1 with errno set (`ctypes.get_errno`) on failure."""
    return cast(Callable[..., int],
                functools.partial(_libc.syscall, ctypes.c_long(syscall_number(name))))


def syscall(name: str, *args: Arg) -> int:
    """syscall(2) by name; integer arguments are passed as C longs. Raises OSError
    with the plain strerror (callers name the call in their own message)."""
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _check(_libc.syscall(ctypes.c_long(syscall_number(name)), *conv))


# -- namespaces and mounts (the sandboxee's layers) ------------------------------------------

def fork_without_hooks() -> int:
    """fork(2) without CPython's at-fork work, for a process with one thread (the caller
    checks: sandbox.sandboxee.forking). `os.fork()` runs every `os.register_at_fork`
    hook in the child (threading's, logging's, random's) and the interpreter's own
    re-init; in a fork of the warm template they write ~760 KiB of its pages
    (docs/benchmarks-journal.md), copies a Python action's PID 2 inherits. With one thread
    there is no lock another thread could hold and no thread to forget, so none of it
    is needed; the GIL stays held across the call (`_HoldingGil`), as `os.fork()`
    holds it. Raises OSError."""
    pid = int(_raw_fork())
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid


def unshare(flags: int) -> None:
    if sys.version_info >= (3, 12):
        os.unshare(flags)
    else:
        _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    if sys.version_info >= (3, 12):
        os.setns(fd, nstype)
    else:
        _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def _enc(s: str | None) -> bytes | None:
    return os.fsencode(s) if s is not None else None


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags),
                       _enc(data)), f"mount {target}")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(os.fsencode(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(ctypes.c_long(syscall_number("pivot_root")), os.fsencode(new_root),
                         os.fsencode(put_old)), "pivot_root")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(target: str, attr_set: int, flags: int, dirfd: int = AT_FDCWD) -> None:
    """mount_setattr(2) adding `attr_set` (MOUNT_ATTR_*) to the mount at `target`;
    ENOSYS on kernels before 5.12 (callers fall back to remounts)."""
    attr = _MountAttr(attr_set, 0, 0, 0)
    syscall("mount_setattr", ctypes.c_int(dirfd), os.fsencode(target), ctypes.c_uint(flags),
            ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))


OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH, MOVE_MOUNT_T_EMPTY_PATH = 0x04, 0x40


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount tree at
    `path` in `dirfd` (``""`` with AT_EMPTY_PATH: the descriptor's own object)."""
    return syscall("open_tree", ctypes.c_int(dirfd), os.fsencode(path), ctypes.c_uint(flags))


def move_mount(from_fd: int, to_fd: int) -> None:
    """move_mount(2) of the detached tree `from_fd` onto the object of descriptor
    `to_fd`: no path is looked up, so nothing can be swapped beneath it."""
    syscall("move_mount", ctypes.c_int(from_fd), b"", ctypes.c_int(to_fd), b"",
            ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


def sethostname(name: str) -> None:
    socket.sethostname(name)


_ENVIRONS: list[object] = []   # every C environment `set_environ` made: held for life


def set_environ(entries: list[bytes]) -> None:
    """The C environment (`environ`) becomes `entries`, each ``KEY=VALUE``, in one
    buffer and one pointer array: what clearenv(3) and a setenv per variable do, without a
    malloc per variable (in a fork of the template each one copied a page or two of
    its heap: docs/benchmarks-journal.md). A later setenv copies the array first, as glibc does
    for any environment it did not allocate. Raises ValueError as os.putenv does."""
    for entry in entries:
        if b"\0" in entry or entry.startswith(b"=") or b"=" not in entry:
            raise ValueError(f"illegal environment variable {entry[:64]!r}")
    blob = ctypes.create_string_buffer(b"\0".join(entries) + b"\0")
    base, offsets, at = ctypes.addressof(blob), [], 0
    for entry in entries:
        offsets.append(base + at)
        at += len(entry) + 1
    table = (ctypes.c_void_p * (len(entries) + 1))(*offsets, None)
    _ENVIRONS.append((blob, table))
    ctypes.c_void_p.in_dll(_libc, "environ").value = ctypes.addressof(table)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2); its (non-negative) result, or OSError."""
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl {option}")


# -- files: the one path resolver's call and the broker's ------------------------------------

class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str | bytes, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2); raises OSError like os.open (with the path as filename). EAGAIN
    (a concurrent rename during ``..`` under RESOLVE_IN_ROOT) is retried a few times."""
    how = _OpenHow(flags, mode, resolve)
    raw = os.fsencode(path)
    nr = ctypes.c_long(syscall_number("openat2"))
    err = 0
    for _ in range(8):
        ret = _libc.syscall(nr, ctypes.c_int(dirfd), ctypes.c_char_p(raw), ctypes.byref(how),
                            ctypes.c_size_t(ctypes.sizeof(how)))
        if ret >= 0:
            return int(ret)
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    raise OSError(err, os.strerror(err), os.fsdecode(raw))


def renameat2(sfd: int, src: str, dfd: int, dst: str, flags: int) -> None:
    """renameat2(2) (RENAME_NOREPLACE / RENAME_EXCHANGE); OSError names `src`."""
    ret = _libc.syscall(ctypes.c_long(syscall_number("renameat2")), ctypes.c_int(sfd),
                        ctypes.c_char_p(os.fsencode(src)), ctypes.c_int(dfd),
                        ctypes.c_char_p(os.fsencode(dst)), ctypes.c_uint(flags))
    _check(ret, filename=src)


def faccessat(dirfd: int, name: str, mode: int, flags: int) -> int:
    """faccessat(2): 0 or the errno (os.access hides it behind a bool)."""
    ret = _libc.faccessat(ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(name)),
                          ctypes.c_int(mode), ctypes.c_int(flags))
    return ctypes.get_errno() if ret != 0 else 0


def statx_mnt_id(fd: int) -> int:
    """statx(2)'s stx_mnt_id of descriptor `fd` (needs no /proc); OSError when it fails."""
    buf = ctypes.create_string_buffer(256)
    _check(_libc.statx(ctypes.c_int(fd), b"", ctypes.c_int(AT_EMPTY_PATH),
                       ctypes.c_uint(STATX_MNT_ID), buf), "statx")
    return int.from_bytes(buf.raw[0x90:0x98], "little")


# -- processes -------------------------------------------------------------------------------

def pidfd_getfd(tid: int, fd: int) -> int:
    """A duplicate of descriptor `fd` of thread `tid` (pidfd_getfd: same open file)."""
    pidfd = os.pidfd_open(tid, PIDFD_THREAD)
    try:
        return syscall("pidfd_getfd", pidfd, fd, 0)
    finally:
        os.close(pidfd)


SPLICE_F_NONBLOCK = 2


def tee(src: int, dst: int, length: int) -> int:
    """tee(2) without waiting: up to `length` bytes of pipe `src` copied into pipe
    `dst`, none taken from `src`; 0 when `src` has ended. BlockingIOError when `src`
    is empty or `dst` full."""
    return syscall("tee", src, dst, length, SPLICE_F_NONBLOCK)


def _prepared_process_vm_readv() -> _NamedFuncPointer:
    fn = _libc.process_vm_readv
    fn.restype = ctypes.c_ssize_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                   ctypes.c_ulong, ctypes.c_ulong]
    return fn


#: process_vm_readv(2) with its argument types set, called bare on the audit's hot
#: path (sandbox/monitor/proc_mem.py): it returns -1 and leaves the errno in
#: ctypes.get_errno() instead of raising.
process_vm_readv = _prepared_process_vm_readv()


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


# -- the C heap (the warm template's, sandbox/sandboxee/template.py) ---------------------------

class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


_mallinfo2 = getattr(_libc, "mallinfo2", None)   # glibc 2.33 and later
if _mallinfo2 is not None:
    _mallinfo2.restype = _MallInfo2
_libc.malloc.restype = ctypes.c_void_p


def heap_free_below_top() -> int | None:
    """Bytes of free chunks of glibc's main arena below its top chunk (mallinfo2's
    fordblks - keepcost); None without mallinfo2 (not glibc, or older than 2.33)."""
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return int(info.fordblks) - int(info.keepcost)


MADV_POPULATE_WRITE = 23   # linux/mman.h, Linux 5.14


def madvise(addr: int, length: int, advice: int) -> None:
    """madvise(2) on this process's own memory; OSError with the errno."""
    _check(_libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(length), ctypes.c_int(advice)),
           "madvise")


def malloc_hold(size: int) -> None:
    """malloc(size), never freed: held for the process's life. Its address is not kept:
    a Python list of them grew by realloc, and each of its old arrays freed was a
    chunk below the heap's top again (the plug's own bookkeeping: up to ~55 KiB left
    free after the plug, depending on the heap's layout)."""
    _libc.malloc(ctypes.c_size_t(size))


def malloc_trim() -> None:
    """Give every free page of glibc's arenas back to the kernel (malloc_trim(0)).

    glibc returns a thread's arena memory only from its top; a page freed below a
    chunk still in use stays in the process's private memory. A burst of runs that
    each opened an SQLite connection (~120 KiB of lookaside and page cache, on the
    audit writer's thread) left ~37 KiB per run resident in the monitor host after
    the connections closed (sandbox/audit/writer.py trims after such rounds)."""
    trim = getattr(_libc, "malloc_trim", None)   # glibc only
    if trim is not None:
        trim(ctypes.c_size_t(0))
