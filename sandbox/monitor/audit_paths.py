"""Paths of a notified syscall, as the sandbox sees them, read from outside it.

* `read(pid, addr)`: the NUL-terminated string in the caller's memory, through
  ``process_vm_readv`` of the thread (`ProcMem`, no cached descriptor). ADVISORY: another thread can change
  it right after (seccomp_unotify(2), NOTES). Used to record, never to allow.
* `base(pid, dirfd)`: the directory a relative path starts from:
  ``readlink /proc/<tid>/cwd`` or ``/proc/<tid>/fd/<dirfd>``. For a process in
  another mount namespace the kernel prints the path from *that* namespace's
  root, i.e. the path the sandbox sees (tested in tests/test_audit_paths.py).
* `canonical(path, follow, pid)`: the real path inside the sandbox's root
  (sandbox/monitor/record_path.py on the one resolver, root_walk.py: the
  kernel walks with openat2 RESOLVE_IN_ROOT in ``/proc/<pid>/root``, the path
  is read back from the descriptor). Where ``/proc`` is on the way its links
  are the caller's: ``self`` is its pid in the sandbox's PID namespace
  (`ns_ids`), a magic link (``cwd``, ``fd/N``, ...) is read from the
  sandbox's ``/proc`` and walked on from the object it names.

Bounded (issue 11): the only cache is the resolver's, a fixed number of short
directory spellings; it is cleared whenever the sandbox performs a syscall that
can make a name a symlink or remove one (symlink, rename, link, unlink, rmdir),
`invalidate()`.
"""
from __future__ import annotations

import os
from typing import Any

from sandbox.monitor.proc_mem import ProcMem
from sandbox.monitor.record_path import canonical
from sandbox.monitor.root_walk import Root

AT_FDCWD = 0xFFFFFF9C      # -100 as the low 32 bits of the argument register
_MASK32 = 0xFFFFFFFF


class PathError(Exception):
    """The path could not be read (caller gone, bad pointer)."""


class Paths:
    def __init__(self) -> None:
        self.mem = ProcMem()
        self.root_fd: int | None = None
        self.root: Root | None = None
        self.depth = 0          # PID namespaces above and including the sandbox's

    # -- the caller's memory -----------------------------------------------------------------
    def read(self, pid: int, addr: int, limit: int = 4096) -> str:
        """The C string at `addr` of thread `pid` (advisory; see module doc)."""
        if addr == 0:
            raise PathError("NULL path")
        try:
            data = self.mem.read_cstr(pid, addr, limit)
        except OSError as exc:
            raise PathError(f"cannot read the path of {pid}: {exc.strerror}") from None
        if data is None:
            raise PathError(f"cannot read the path of {pid} at {addr:#x}")
        return os.fsdecode(data)

    def close_mem(self) -> None:
        self.mem.close()

    def close_root(self) -> None:
        """The run is over and nothing resolves any more: the root's descriptors go."""
        if self.root is not None:
            self.root.close()
        self.root = self.root_fd = None

    # -- where relative paths start ----------------------------------------------------------
    @staticmethod
    def base(pid: int, dirfd: int) -> str:
        d = dirfd & _MASK32
        try:
            if d == AT_FDCWD:
                return os.readlink(f"/proc/{pid}/cwd")
            if d >= 0x80000000:
                raise PathError(f"bad directory descriptor {d - (1 << 32)}")
            return os.readlink(f"/proc/{pid}/fd/{d}")
        except OSError as exc:
            raise PathError(f"cannot resolve the directory of {pid}: {exc.strerror}") from None

    def absolute(self, pid: int, dirfd: int | None, raw: str) -> str:
        if raw.startswith("/"):
            return raw
        base = self.base(pid, AT_FDCWD if dirfd is None else dirfd)
        if not raw:
            return base
        return base + raw if base.endswith("/") else base + "/" + raw

    # -- canonical form inside the sandbox's root --------------------------------------------
    def set_root(self, pid: int) -> None:
        if self.root_fd is None:
            try:
                self.root_fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY
                                       | os.O_CLOEXEC)
                self.root = Root(self.root_fd)
                self.depth = len(_status_ids(pid, b"NSpid:"))
            except OSError:
                self.root_fd = self.root = None

    def ns_ids(self, pid: int) -> tuple[int, int]:
        """Thread `pid`'s (tgid, tid) in the sandbox's PID namespace (the one its /proc
        shows: the first caller's, whose depth `set_root` noted), from the host's
        /proc/<pid>/status. OSError when it is gone or deeper than it can say."""
        tgids, tids = _status_ids(pid, b"NStgid:"), _status_ids(pid, b"NSpid:")
        if not self.depth or len(tids) < self.depth or len(tgids) < self.depth:
            raise OSError(f"no ids of {pid} in the sandbox's PID namespace")
        return tgids[self.depth - 1], tids[self.depth - 1]

    def invalidate(self) -> None:
        if self.root is not None:
            self.root.forget()

    def canonical(self, path: str, follow: bool, info: list[Any] | None = None,
                  pid: int | None = None) -> str:
        """See record_path.canonical (`info`: what the answer rests on, for notify_fast;
        `pid`: the calling thread, whose /proc/self a path may go through)."""
        if self.root is None:
            return os.path.normpath(path) if path.startswith("/") else path
        ids = None if pid is None else (lambda: self.ns_ids(pid))
        return canonical(self.root, path, follow, info, ids)


def _status_ids(pid: int, field: bytes) -> list[int]:
    """A list of ids (NSpid, NStgid: outermost first) from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(field):
                return [int(x) for x in line.split()[1:]]
    return []
