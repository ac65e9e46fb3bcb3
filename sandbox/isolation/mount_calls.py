"""The bind and mount-attribute calls of the mount layer, with their fallback before 5.12.

Why apart: `open_tree` + `mount_setattr` + `move_mount` set a bound tree's flags on
the detached copy, before anything in the view can see it; kernels without them
(ENOSYS) take `mount(MS_BIND)` and then `MS_REMOUNT|MS_BIND` on each mount of the
bound tree (found in /proc/self/mountinfo), OR-ing in the flags each already has
(read with `statvfs`): an unprivileged user may not clear a locked flag (nodev,
nosuid, noexec, read-only, atime), so omitting one would fail with EPERM.
"""
from __future__ import annotations

import errno
import os

from sandbox.isolation import libc
from sandbox.isolation.mount_plan import (ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY,
                                          path_parts, under)

# statvfs f_flag bits -> MS_* flags that must survive a remount (locked flags).
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME, _MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
_ST_TO_MS = ((os.ST_RDONLY, libc.MS_RDONLY), (os.ST_NOSUID, libc.MS_NOSUID),
             (os.ST_NODEV, libc.MS_NODEV), (os.ST_NOEXEC, libc.MS_NOEXEC),
             (os.ST_NOATIME, _MS_NOATIME), (os.ST_NODIRATIME, _MS_NODIRATIME))
_ST_RELATIME, _ST_NOATIME = os.ST_RELATIME, os.ST_NOATIME

_have_setattr = True  # cleared on ENOSYS; tests clear it to exercise the fallback


def set_attrs(target: str, attrs: int, recursive: bool) -> None:
    """Add `attrs` to the mount at `target` (and to its submounts when recursive)."""
    global _have_setattr
    if _have_setattr:
        flags = libc.AT_SYMLINK_NOFOLLOW | (libc.AT_RECURSIVE if recursive else 0)
        try:
            libc.mount_setattr(target, attrs, flags)
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
        _have_setattr = False
    for mnt in (_submounts(target) if recursive else [target]):
        _remount(mnt, attrs)


def set_attrs_fd(fd: int, attrs: int, recursive: bool, target: str) -> None:
    """`set_attrs` on the mount descriptor `fd` is at (opened beneath the view)."""
    if _have_setattr:
        try:
            libc.mount_setattr("", attrs, libc.AT_EMPTY_PATH
                               | (libc.AT_RECURSIVE if recursive else 0), dirfd=fd)
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
    set_attrs(target, attrs, recursive)


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def bind(src: int, dst: int, attrs: int, recursive: bool, target: str) -> None:
    """Bind the object of descriptor `src` onto that of `dst` (beneath.py: both opened
    without following a symlink), `attrs` set on the copy before it is attached."""
    global _have_setattr
    rec = libc.AT_RECURSIVE if recursive else 0
    if _have_setattr:
        try:
            tree = libc.open_tree(src, "", libc.OPEN_TREE_CLONE | libc.AT_EMPTY_PATH
                                  | os.O_CLOEXEC | rec)
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            _have_setattr = False
        else:
            try:
                libc.mount_setattr("", attrs, libc.AT_EMPTY_PATH | rec, dirfd=tree)
                libc.move_mount(tree, dst)
                return
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
                _have_setattr = False
            finally:
                os.close(tree)
    # Before 5.12: mount(2) through the descriptors' magic links, then remounts.
    libc.mount(fd_path(src), fd_path(dst), None,
               libc.MS_BIND | (libc.MS_REC if recursive else 0))
    set_attrs(target, attrs, recursive)


def _submounts(target: str) -> list[str]:
    """`target` and every mount beneath it, parents first (fallback path only)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            where = line.split()[4].encode().decode("unicode_escape")
            if under(where, target):
                out.append(where)
    return sorted(out, key=path_parts)


def _remount(target: str, attrs: int) -> None:
    """Fallback: MS_REMOUNT|MS_BIND keeping the (possibly locked) flags the mount has."""
    flags = libc.MS_REMOUNT | libc.MS_BIND
    flags |= (libc.MS_RDONLY if attrs & ATTR_RDONLY else 0)
    flags |= (libc.MS_NOSUID if attrs & ATTR_NOSUID else 0)
    flags |= (libc.MS_NODEV if attrs & ATTR_NODEV else 0)
    flags |= (libc.MS_NOEXEC if attrs & ATTR_NOEXEC else 0)
    have = os.statvfs(target).f_flag
    for st_bit, ms_bit in _ST_TO_MS:
        if have & st_bit:
            flags |= ms_bit
    if have & _ST_RELATIME:
        flags |= _MS_RELATIME
    elif not have & _ST_NOATIME:
        flags |= _MS_STRICTATIME
    libc.mount(None, target, None, flags)
