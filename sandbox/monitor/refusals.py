"""What the kernel would have answered the caller, for the broker's refusals and checks.

The broker (sandbox/monitor/broker.py) acts for the sandboxed caller. Where it
refuses, the caller should get the errno the kernel would have given (a
program's behaviour can depend on ENOENT vs EACCES vs EROFS). The broker
process has the caller's credentials (sandbox/monitor/broker_process.py), so
the permission checks made here are the caller's. Everything here runs only
on the refusal path, so it may cost a few syscalls.
"""
from __future__ import annotations

import errno
import os
import stat

from sandbox.isolation import libc
from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.root_walk import Located

W_OK, X_OK = os.W_OK, os.X_OK


def _access(dirfd: int, name: str, mode: int) -> int:
    """faccessat(AT_EACCESS | AT_SYMLINK_NOFOLLOW): 0 or the errno. The kernel checks
    the file's permission bits, then a read-only mount (EROFS) for W_OK: the order
    an open or unlink meets them."""
    return libc.faccessat(dirfd, name, mode, libc.AT_EACCESS | libc.AT_SYMLINK_NOFOLLOW)


def _mount_id(fd: int) -> int | None:
    """statx(2)'s stx_mnt_id of `fd` (no /proc needed: the broker has none of its own)."""
    try:
        return libc.statx_mnt_id(fd)
    except OSError:
        return None


def refusal(dirfd: int, name: str, op: str, opening: bool = False) -> int:
    """The errno for a refused `op` on `name` in `dirfd` where the kernel fails
    before the sandbox's own checks (Landlock: EACCES), in the kernel's order:
    EEXIST to create over a name, EROFS in a read-only mount, ENOENT to delete
    nothing, the permission bits (EACCES), EBUSY to delete a mount point (a
    mask). `opening`: an open with O_CREAT, which on an existing name is a
    write. Only on the refusal path: a few syscalls."""
    if op not in ("write", "create", "delete"):
        return errno.EACCES
    try:
        is_dir = stat.S_ISDIR(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
        exists = True
    except FileNotFoundError:
        exists = is_dir = False
    except OSError as exc:
        return exc.errno or errno.EACCES
    if op == "write" or (op == "create" and exists and opening):
        if not exists:
            return errno.ENOENT
        if is_dir and opening:
            return errno.EISDIR          # opening a directory for writing, before any check
        return _access(dirfd, name, W_OK) or errno.EACCES
    if op == "create" and exists:
        return errno.EEXIST
    if os.fstatvfs(dirfd).f_flag & os.ST_RDONLY:
        return errno.EROFS
    if not exists:
        return errno.ENOENT if op == "delete" else _access(dirfd, ".", W_OK | X_OK) \
            or errno.EACCES
    err = _access(dirfd, ".", W_OK | X_OK)
    if err:
        return err
    if op == "delete":
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError:
            return errno.EACCES
        try:
            if _mount_id(fd) != _mount_id(dirfd):
                return errno.EBUSY
        finally:
            os.close(fd)
    return errno.EACCES


def _kind(loc: Located) -> str:
    """'missing', 'dir' or 'other' for the final name of `loc` (not followed)."""
    try:
        st = os.stat(loc.name, dir_fd=loc.fd, follow_symlinks=False)   # type: ignore[arg-type]
    except FileNotFoundError:
        return "missing"
    return "dir" if stat.S_ISDIR(st.st_mode) else "other"


def bad_final(name: str, slot: int, loc: Located, flags: int, path: str) -> int:
    """The errno the kernel gives for a final component a name-changing call cannot
    take ("/", ".", "..", a trailing slash on a non-directory), before any permission
    check; 0 when it is a plain name."""
    remove_dir = name == "rmdir" or (name == "unlinkat" and bool(flags & S.AT_REMOVEDIR))
    creates = name.startswith(("mkdir", "mknod", "symlink")) or (
        name.startswith("link") and slot == 1)
    if loc.name is None:
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if remove_dir:
            return errno.ENOTEMPTY if last == ".." else errno.EINVAL if last == "." \
                else errno.EBUSY
        if name.startswith("unlink"):
            return errno.EISDIR
        if name.startswith("rename"):
            return errno.EBUSY
        return errno.EEXIST if creates else errno.EPERM      # link of a directory
    if not loc.slash or remove_dir or name.startswith("mkdir"):
        return 0
    kind = _kind(loc)
    if creates:
        return errno.ENOENT if kind == "missing" else errno.EEXIST
    if kind == "missing":
        return errno.ENOENT
    if name.startswith("unlink"):
        return errno.EISDIR if kind == "dir" else errno.ENOTDIR
    if kind != "dir":
        return errno.ENOTDIR
    return errno.EPERM if name.startswith("link") else 0


__all__ = ["refusal", "bad_final"]


class Denied(Exception):
    """A brokered request the policy refuses (broker_exec, broker_net): the errno the
    caller gets, and the operation, path and rule for the audit record."""

    def __init__(self, err: int, op: str, path: str, rule: str) -> None:
        super().__init__(err)
        self.err, self.op, self.path, self.rule = err, op, path, rule
