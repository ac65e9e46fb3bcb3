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

WHY ONE BUFFER PER THREAD, NOT PER INSTANCE. The monitor host watches every run
of a launcher (issue 14: its own memory may grow by at most 64 KiB per run), and
each run used to hold two page buffers (its audit paths' and its listener's),
8 KiB of the host per live run while only the threads that read (the
notification hub, a broker call it drives) ever use one at a time. The page
buffer and its iovec pair now live in a thread-local slot made on a thread's
first read: an instance is a few bytes, and two threads never share a buffer.
"""
from __future__ import annotations

import ctypes
import errno
import os
import threading

from sandbox.isolation import libc

PAGE = 4096

FIRST = 256     # most paths fit: read that much first, the rest of the page only if needed

_readv = libc.process_vm_readv


class _Page:
    """One thread's read buffer: a page and two struct iovec side by side (local: the
    page; remote: set per call)."""

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(PAGE)
        self.view = memoryview(self.buf)
        self.iov = (ctypes.c_size_t * 4)(ctypes.addressof(self.buf), PAGE, 0, 0)
        self.lp = ctypes.addressof(self.iov)
        self.rp = self.lp + 2 * ctypes.sizeof(ctypes.c_size_t)


class _PerThread(threading.local):
    page: _Page | None = None


_pages = _PerThread()


def _page() -> _Page:
    page = _pages.page
    if page is None:
        page = _pages.page = _Page()
    return page


class ProcMem:
    """`read(pid, addr, size)` and `read_cstr(pid, addr, limit)` of thread `pid`'s memory.
    Holds nothing: the buffer is the calling thread's (see the module doc)."""

    __slots__ = ()

    def __init__(self, cap: int = 0) -> None:   # `cap`: kept for callers of the cached version
        pass

    def _chunk(self, pid: int, addr: int, size: int) -> bytes | None:
        """Up to `size` (<= PAGE) bytes at `addr`; None when the address is not mapped."""
        page = _page()
        iov = page.iov
        iov[1] = iov[3] = size
        iov[2] = addr
        n = _readv(pid, page.lp, 1, page.rp, 1, 0)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EFAULT:
                return None
            raise OSError(err, f"process_vm_readv of {pid}: {os.strerror(err)}")
        return bytes(page.view[:n])

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
