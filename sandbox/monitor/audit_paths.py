"""Paths of a notified syscall, as the sandbox sees them, read from outside it.

* `read(pid, addr)`: the NUL-terminated string in the caller's memory, through
  ``process_vm_readv`` of the thread (`ProcMem`, no cached descriptor). ADVISORY: another thread can change
  it right after (seccomp_unotify(2), NOTES). Used to record, never to allow.
* `base(pid, dirfd)`: the directory a relative path starts from:
  ``readlink /proc/<tid>/cwd`` or ``/proc/<tid>/fd/<dirfd>``. For a process in
  another mount namespace the kernel prints the path from *that* namespace's
  root, i.e. the path the sandbox sees (tested in tests/test_audit_paths.py).
* `canonical(path, follow)`: symlinks resolved *inside the sandbox's root*:
  each component is looked up with ``readlinkat(root_fd, ...)`` where
  ``root_fd`` is ``/proc/<pid>/root`` (the sandbox's root after pivot_root),
  and absolute link targets restart from that root, not the monitor's. This is
  what makes ``/bin/sh`` (a link to ``usr/bin/sh`` on a merged-/usr system) and
  a link planted in the output directory audit as what the kernel opens.
  ``/proc`` and ``/dev`` are left lexical (their links are magic: ``self``
  would name the monitor).

Caches (the hot path is mostly dict lookups): the readlink result of every
component looked at, and the canonical form of every full path, both cleared
whenever the sandbox performs a syscall that can make a name a symlink or
remove one (symlink, rename, link, unlink, rmdir) — `invalidate()`.
"""
from __future__ import annotations

import os

from sandbox.monitor.proc_mem import ProcMem

AT_FDCWD = 0xFFFFFF9C      # -100 as the low 32 bits of the argument register
_MASK32 = 0xFFFFFFFF
_LEXICAL = ("/proc", "/dev")
_MAX_LINKS = 40
_CACHE_MAX = 100_000


class PathError(Exception):
    """The path could not be read (caller gone, bad pointer)."""


class Paths:
    def __init__(self) -> None:
        self.mem = ProcMem()
        self.root_fd: int | None = None
        self._links: dict[str, str | None] = {}   # canonical prefix -> link target or None
        self._canon: dict[tuple[str, bool], str] = {}

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
            except OSError:
                self.root_fd = None

    def invalidate(self) -> None:
        self._links.clear()
        self._canon.clear()

    def canonical(self, path: str, follow: bool) -> str:
        key = (path, follow)
        hit = self._canon.get(key)
        if hit is not None:
            return hit
        out = self._resolve(path, follow)
        if len(self._canon) >= _CACHE_MAX:
            self._canon.clear()
            self._links.clear()
        self._canon[key] = out
        return out

    def _readlink(self, prefix: str) -> str | None:
        if prefix in self._links:
            return self._links[prefix]
        target = None
        if self.root_fd is not None:
            try:
                target = os.readlink(prefix[1:], dir_fd=self.root_fd)
            except OSError:
                target = None
        self._links[prefix] = target
        return target

    def _resolve(self, path: str, follow: bool) -> str:
        trailing = path.endswith("/")
        stack = [c for c in reversed(path.split("/")) if c and c != "."]
        resolved = ""
        links = 0
        while stack:
            c = stack.pop()
            if c == "..":
                resolved = resolved.rsplit("/", 1)[0]
                continue
            cand = resolved + "/" + c
            last = not stack
            if (last and not follow and not trailing) or _lexical(cand):
                resolved = cand
                continue
            target = self._readlink(cand)
            if target is None:
                resolved = cand
                continue
            links += 1
            if links > _MAX_LINKS:
                resolved = cand
                continue
            if target.startswith("/"):
                resolved = ""
            stack.extend(c2 for c2 in reversed(target.split("/")) if c2 and c2 != ".")
        return resolved or "/"


def _lexical(p: str) -> bool:
    for a in _LEXICAL:
        if p == a or p.startswith(a + "/"):
            return True
    return False
