"""Reading a sandboxed thread's memory from the monitor, through /proc/<tid>/mem.

ADVISORY BY NATURE: another thread of the caller can change the bytes right
after they were read (seccomp_unotify(2), NOTES). What is read here may be
recorded, or used to refuse; it is never the reason to allow anything.

One descriptor per thread is kept open (a pread is much cheaper than an
open), at most `cap` of them; a cached descriptor goes stale when its thread
execs or its pid is reused, so a failed read is retried once with a fresh one.
"""
from __future__ import annotations

import os

PAGE = 4096


class ProcMem:
    def __init__(self, cap: int = 512) -> None:
        self._fds: dict[int, int] = {}
        self.cap = cap

    def fd(self, pid: int) -> int:
        fd = self._fds.get(pid)
        if fd is None:
            if len(self._fds) >= self.cap:
                self.close()
            fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            self._fds[pid] = fd
        return fd

    def read_cstr(self, pid: int, addr: int, limit: int = 4096) -> bytes | None:
        """The NUL-terminated bytes at `addr` (at most `limit`, without the NUL).

        None when nothing could be read, or the string ran into memory that
        cannot be read before its NUL (the kernel would say EFAULT); raises
        OSError when the thread's memory cannot be opened or read at all.
        Reads stop at page ends, so a short string never touches the next page.
        """
        for attempt in (0, 1):
            try:
                fd = self.fd(pid)
                out = b""
                pos = addr
                while len(out) < limit:
                    chunk = os.pread(fd, min(PAGE - pos % PAGE, limit - len(out)), pos)
                    if not chunk:
                        break
                    end = chunk.find(b"\0")
                    if end >= 0:
                        return out + chunk[:end]
                    out += chunk
                    pos += len(chunk)
                else:
                    return out          # `limit` bytes and no NUL yet: truncated
                if out:
                    return out
            except OSError:
                if attempt:
                    raise
            self.forget(pid)
        return None

    def forget(self, pid: int) -> None:
        """Drop the cached descriptor of a thread that exited or exec'd."""
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)
