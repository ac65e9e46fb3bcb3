"""The monitor's side of seccomp user notification: receive, answer, read paths, name.

A `Listener` wraps the descriptor the sandboxee got from
SECCOMP_FILTER_FLAG_NEW_LISTENER, which the monitor takes with pidfd_getfd. It is a hot
path (the file audit answers every open of the sandboxee), so it keeps
preallocated buffers and uses `fcntl.ioctl` on a bytearray, which measured
faster than a ctypes call (see docs/seccomp.md for figures).

`set_sync_wakeup()` passes SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP **by value** as
the ioctl argument: the kernel then wakes the monitor and the sandboxee on the
same CPU, which cuts a notified round trip by several times.

SECURITY: `read_path` reads the sandboxee's memory, which the sandboxee (or
another of its threads, or a process sharing its memory) can change between
the read and the moment the kernel performs the syscall after CONTINUE.
Anything learned from it is *advisory*: fine to record in an audit, never a
reason to ALLOW something the kernel layers (Landlock, mounts, the filter)
would otherwise refuse. See seccomp_unotify(2), NOTES. Only `respond_error`
(deny) and `addfd` (the monitor opens the file itself and hands over the
descriptor) are safe bases for a decision.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import select
import struct
from dataclasses import dataclass
from typing import NamedTuple

from sandbox.isolation import libc
from sandbox.isolation import syscall_profiles as sp
from sandbox.monitor.proc_mem import ProcMem

# linux/seccomp.h ioctls: _IOC(dir, '!', nr, size)
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


SECCOMP_IOCTL_NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, 0, 80)
SECCOMP_IOCTL_NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, 1, 24)
SECCOMP_IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, 8)
SECCOMP_IOCTL_NOTIF_ADDFD = _ioc(_IOC_WRITE, 3, 24)
SECCOMP_IOCTL_NOTIF_SET_FLAGS = _ioc(_IOC_WRITE, 4, 8)
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2
SECCOMP_GET_NOTIF_SIZES = 3
AUDIT_ARCH_X86_64 = 0xC000003E

_NOTIF = struct.Struct("<QIIiIQ6Q")     # struct seccomp_notif (80 bytes)
_RESP = struct.Struct("<QqiI")          # struct seccomp_notif_resp (24 bytes)
_ADDFD = struct.Struct("<QIIII")        # struct seccomp_notif_addfd (24 bytes)
_U64 = struct.Struct("<Q")


class Sizes(NamedTuple):
    notif: int
    resp: int
    data: int


@functools.lru_cache(maxsize=1)
def notif_sizes() -> Sizes:
    """The kernel's struct sizes (SECCOMP_GET_NOTIF_SIZES); buffers are sized from them."""
    raw = (ctypes.c_uint16 * 3)()
    try:
        libc.syscall("seccomp", SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(raw))
    except OSError as exc:
        raise OSError(exc.errno, f"SECCOMP_GET_NOTIF_SIZES: {exc.strerror}") from None
    return Sizes(*raw)


class Notification(NamedTuple):
    id: int
    pid: int          # thread id of the caller, in the monitor's PID namespace
    nr: int
    arch: int
    ip: int
    args: tuple[int, int, int, int, int, int]

    @classmethod
    def from_buffer(cls, buf: "bytes | bytearray") -> "Notification":
        """Decode a struct seccomp_notif (from RECV, or handed over by notify_fast)."""
        nid, pid, _flags, nr, arch, ip, a0, a1, a2, a3, a4, a5 = _NOTIF.unpack_from(buf)
        return cls(nid, pid, nr, arch, ip, (a0, a1, a2, a3, a4, a5))

    @property
    def name(self) -> str:
        return syscall_name(self.nr) if self.arch == AUDIT_ARCH_X86_64 else f"arch{self.arch:#x}:{self.nr}"


@dataclass(frozen=True)
class Violation:
    """A syscall the policy denies, caught before it ran (on_violation = "kill")."""
    syscall: str
    nr: int
    args: tuple[int, ...]
    pid: int

    def describe(self) -> str:
        return f"syscall {self.syscall} ({self.nr}) denied by the policy"


def syscall_name(nr: int) -> str:
    """x86_64 syscall number -> name (``syscall_<nr>`` when unknown)."""
    return sp.syscall_name(nr)


def violation_of(n: Notification, table: sp.Table) -> Violation | None:
    """A `Violation` when `table` (seccomp.table_for(policy.syscalls, notify)) denies `n`.

    A notification for a syscall that the table only *notifies* (file audit)
    returns None. Anything not for x86_64 is a violation (the filter kills
    those itself; this is only defence in depth).
    """
    if n.arch != AUDIT_ARCH_X86_64 or table.decide(n.nr, n.args) == sp.DENY:
        return Violation(n.name, n.nr, n.args, n.pid)
    return None


class Listener:
    """A seccomp notification descriptor. Not thread-safe: one per monitor thread."""

    def __init__(self, fd: int, *, own: bool = True) -> None:
        self._fd = fd
        self._own = own
        sizes = notif_sizes()
        self._recv_size = max(sizes.notif, _NOTIF.size)
        self._recv = bytearray(self._recv_size)
        self._zero = bytes(self._recv_size)   # RECV requires a zeroed buffer
        self._resp = bytearray(max(sizes.resp, _RESP.size))
        self._addfd = bytearray(_ADDFD.size)
        self._u64 = bytearray(8)
        self.mem = ProcMem()                   # the callers' memory (process_vm_readv)

    def fileno(self) -> int:
        return self._fd

    def recv(self) -> Notification | None:
        """Block for the next notification; None if it vanished (the caller died)."""
        buf = self._recv
        buf[:] = self._zero
        while True:
            try:
                fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
                break
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise
        nid, pid, _flags, nr, arch, ip, a0, a1, a2, a3, a4, a5 = _NOTIF.unpack_from(buf)
        return Notification(nid, pid, nr, arch, ip, (a0, a1, a2, a3, a4, a5))

    def _send(self, nid: int, val: int, error: int, flags: int) -> bool:
        _RESP.pack_into(self._resp, 0, nid, val, error, flags)
        try:
            fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_SEND, self._resp, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:   # the caller died or was interrupted
                return False
            raise
        return True

    def respond_continue(self, nid: int) -> bool:
        """Let the syscall run as if unfiltered. False if the notification is gone."""
        return self._send(nid, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def respond_error(self, nid: int, err: int) -> bool:
        """Fail the syscall with `err` (a positive errno)."""
        return self._send(nid, 0, -abs(err), 0)

    def respond_value(self, nid: int, val: int) -> bool:
        """Make the syscall return `val` without running it."""
        return self._send(nid, val, 0, 0)

    def id_valid(self, nid: int) -> bool:
        """Is notification `nid` still pending (its caller alive and waiting)?"""
        _U64.pack_into(self._u64, 0, nid)
        try:
            fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_ID_VALID, self._u64, True)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def addfd(self, nid: int, fd: int, flags: int = 0, *, newfd: int = 0,
              newfd_flags: int = os.O_CLOEXEC) -> int:
        """Install our `fd` in the caller; returns its number there.

        With SECCOMP_ADDFD_FLAG_SEND the syscall also returns that number (and
        the notification is answered). `newfd` is used with ADDFD_FLAG_SETFD.
        """
        _ADDFD.pack_into(self._addfd, 0, nid, flags, fd, newfd, newfd_flags)
        return fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_ADDFD, self._addfd, True)

    def orphaned(self) -> bool:
        """No task uses the filter any more and nothing is pending: the loop is done.

        Since 6.6 a RECV on such a listener returns ENOENT at once instead of
        blocking, so a loop that treated ENOENT as "that caller died, go on" would
        spin until told to stop (taking the GIL from the monitor's own finish)."""
        events = select.poll()
        events.register(self._fd, select.POLLIN | select.POLLHUP)
        ready = events.poll(0)
        return bool(ready) and bool(ready[0][1] & select.POLLHUP) \
            and not ready[0][1] & select.POLLIN

    def set_sync_wakeup(self) -> None:
        """SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (6.6+); the flag goes BY VALUE."""
        fcntl.ioctl(self._fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)

    # --- reading the caller's memory (advisory only: see the module docstring) -------
    def read_path(self, pid: int, addr: int, nid: int | None = None, *,
                  limit: int = 4096) -> str:
        """The NUL-terminated string at `addr` in `pid` (at most `limit` bytes).

        RACY BY NATURE: the caller can change the bytes after we read them.
        Record it; never allow anything because of it. With `nid`, the
        notification is checked still valid after the read, so the pid was
        not recycled. Raises OSError (ENOENT when the caller is gone).
        """
        data = self.mem.read_cstr(pid, addr, limit)
        if nid is not None and not self.id_valid(nid):
            raise OSError(errno.ENOENT, "notification no longer valid")
        if data is None:
            raise OSError(errno.EFAULT, f"cannot read memory of {pid} at {addr:#x}")
        return os.fsdecode(data)

    def forget(self, pid: int) -> None:
        """Nothing is cached per thread any more (kept for callers)."""
        self.mem.forget(pid)

    def close(self) -> None:
        self.mem.close()
        if self._own and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
