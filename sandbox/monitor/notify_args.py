"""What the audit loop reads of a notified call beyond its path: its flags as text, an
attribute's name, a symlink's target, and what a path names in the sandbox's root.

Everything here is advisory, like every argument read from the caller's memory
(seccomp_unotify(2) NOTES: another thread may change it before the kernel reads it):
it goes into the record, or changes only what the caller is told about its own view
(`refused_exec`). Nothing is allowed because of it. Split from notify_loop.py, whose
`AuditLoop` calls these with its `Paths` (sandbox/monitor/audit_paths.py).
"""
from __future__ import annotations

import os
import stat
from typing import Sequence

from sandbox.audit.verdicts import AuditEngine
from sandbox.monitor import audit_syscalls as S
from sandbox.monitor import root_walk as W
from sandbox.monitor.audit_paths import PathError, Paths

X_OK = 1
ACCESS_MODE = {"access": 1, "faccessat": 2, "faccessat2": 2}   # the mode argument


def in_root(paths: Paths, path: str) -> os.stat_result | None:
    """What `path` (canonical: a link it still ends in was not to be followed) names
    in the sandbox's root, or None. Looked up by the kernel (openat2
    RESOLVE_IN_ROOT), the final name never followed: a raced path only changes what
    the caller is told about its own view."""
    root = paths.root_fd
    if root is None:
        return None
    try:
        fd = W.openat2(root, path.lstrip("/") or ".",
                       os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                       resolve=W.RESOLVE_IN_ROOT | W.RESOLVE_NO_MAGICLINKS)
    except OSError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def exists(paths: Paths, path: str, flags: int) -> bool:
    """For an O_CREAT open: does it open what exists (no O_EXCL)?"""
    return not flags & S.O_EXCL and in_root(paths, path) is not None


def refused_exec(paths: Paths, engine: AuditEngine | None, mode: int, path: str) -> bool:
    """Is this access(X_OK) of an executable regular file that only the policy keeps
    from running (notify_loop's module doc)? Looked up in the sandbox's root by the
    kernel, the final name never followed (`path` is canonical)."""
    if mode & 7 != X_OK or engine is None or engine.decide("exec", path).allowed:
        return False
    st = in_root(paths, path)
    return st is not None and stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def flag_text(paths: Paths, name: str, kind: str, flags: int, pid: int,
              args: Sequence[int]) -> str | None:
    """The record's flags column: open flags, AT_* or RENAME_* bits, an inotify mask, a
    symlink's target or an attribute's name (the last two read at `args`, of a symlink
    or xattr call: a key of the compiled loop, an open or stat, passes none)."""
    if kind in ("open", "openat2", "creat"):
        return S.format_open(flags)
    if kind == "symlink":
        try:
            return "target=" + paths.read(pid, args[0])
        except PathError:
            return "target=?"
    if kind == "xattr":
        return xattr_text(paths, name, flags, pid, args)
    if kind == "watch":
        return f"mask={flags:#x}"
    if flags:
        return S.format_bits(flags, "rename" if kind == "rename" else "at")
    return None


def xattr_text(paths: Paths, name: str, flags: int, pid: int,
               args: Sequence[int]) -> str | None:
    """AT_* flags of the *at forms and ``name=`` the attribute (XATTR_NAME_MAX 255)."""
    parts = [S.format_bits(flags, "at")] if flags else []
    arg = S.XATTR_NAME.get(name)
    if arg is not None:
        try:
            parts.append("name=" + paths.read(pid, args[arg], 256))
        except PathError:
            parts.append("name=?")
    return " ".join(parts) or None


def openat2_flags(paths: Paths, pid: int, how: int, size: int) -> int:
    """open_how.flags (advisory, like every argument read from memory)."""
    if not how or size < 8:
        return 0
    data = paths.mem.read(pid, how, 8)
    return int.from_bytes(data, "little") if len(data) == 8 else 0
