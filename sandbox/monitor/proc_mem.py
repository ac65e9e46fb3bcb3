"""Reading a sandboxed thread's memory from the monitor, with process_vm_readv(2).

ADVISORY BY NATURE: another thread of the caller can change the bytes right
after they were read (seccomp_unotify(2), NOTES). What is read here may be
recorded, or used to refuse; it is never the reason to allow anything.

WHY NO DESCRIPTOR IS KEPT. A ``/proc/<tid>/mem`` descriptor is bound to the
address space the task had when it was *opened*. A descriptor opened for a
vfork child (which shares its parent's memory until it execs) keeps reading
the parent's memory after the exec, and one kept for a thread id that exits
and is reused keeps reading the old process: either way another process
chooses what the monitor records (issue 10, finding 5: a read of /etc/passwd
was recorded as the parent's decoy). process_vm_readv resolves the thread id
at each call and reads the address space the task has *now*; with the
notification still pending afterwards (SECCOMP_IOCTL_NOTIF_ID_VALID, checked
by the caller after its reads), that is the address space of the very task
blocked in the syscall. It is also one system call instead of open + pread.

Not thread-safe (one preallocated buffer): one instance per monitor thread.
"""
from __future__ import annotations

import ctypes
import errno
import os

from sandbox.isolation import libc

PAGE = 4096

FIRST = 256     # most paths fit: read that much first, the rest of the page only if needed

_readv = libc.process_vm_readv


class ProcMem:
    """`read(pid, addr, size)` and `read_cstr(pid, addr, limit)` of thread `pid`'s memory."""

    def __init__(self, cap: int = 0) -> None:   # `cap`: kept for callers of the cached version
        self._buf = ctypes.create_string_buffer(PAGE)
        self._view = memoryview(self._buf)
        # two struct iovec side by side: local (our buffer), remote (set per call)
        self._iov = (ctypes.c_size_t * 4)(ctypes.addressof(self._buf), PAGE, 0, 0)
        self._lp = ctypes.addressof(self._iov)
        self._rp = self._lp + 2 * ctypes.sizeof(ctypes.c_size_t)

    def _chunk(self, pid: int, addr: int, size: int) -> bytes | None:
        """Up to `size` (<= PAGE) bytes at `addr`; None when the address is not mapped."""
        iov = self._iov
        iov[1] = iov[3] = size
        iov[2] = addr
        n = _readv(pid, self._lp, 1, self._rp, 1, 0)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EFAULT:
                return None
            raise OSError(err, f"process_vm_readv of {pid}: {os.strerror(err)}")
        return bytes(self._view[:n])

    def read(self, pid: int, addr: int, size: int) -> bytes:
        """Exactly `size` bytes at `addr`, or fewer when the memory ends; raises OSError
        when the thread cannot be read (gone, not ours)."""
        out = b""
        pos = addr
        while len(out) < size:
            chunk = self._chunk(pid, pos, min(PAGE - pos % PAGE, size - len(out)))
            if not chunk:
                break
            out += chunk
            pos += len(chunk)
        return out

    def read_cstr(self, pid: int, addr: int, limit: int = 4096) -> bytes | None:
        """The NUL-terminated bytes at `addr` (at most `limit`, without the NUL).

        None when nothing could be read, or the string ran into memory that
        cannot be read before its NUL (the kernel would say EFAULT); raises
        OSError when the thread's memory cannot be read at all (ESRCH, EPERM).
        Reads stop at page ends, so a short string never touches the next page.
        """
        out = b""
        pos = addr
        first = FIRST
        while len(out) < limit:
            chunk = self._chunk(pid, pos, min(PAGE - pos % PAGE, limit - len(out), first))
            first = PAGE
            if not chunk:
                return None
            end = chunk.find(b"\0")
            if end >= 0:
                return out + chunk[:end]
            out += chunk
            pos += len(chunk)
        return out          # `limit` bytes and no NUL yet: truncated

    def forget(self, pid: int) -> None:
        """Nothing is cached per thread any more (see the module doc)."""

    def close(self) -> None:
        """Nothing to close."""
