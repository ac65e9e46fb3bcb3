"""Opening and creating the mount layer's paths by descriptor, never through a symlink.

The mount plan (`mount_plan.mount_table`) resolves each rule on the host once, to a
symlink-free real path, possibly long before the sandboxee mounts it (a warm
fork server prepares it). Between the two, anyone who can write a directory on
that path (another run granted write there) can swap a component for a
symlink. A bind that looked the path up again would then follow it to
something no rule grants (runc had this class: CVE-2021-30465).

So the sandboxee never hands a plan path to mount(2):

- a bind's source is opened with ``openat2(RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS)``: the plan's paths are symlink-free, so a symlink
  met now is a swap, and the run fails closed (ELOOP) instead of binding it;
- its target is opened beneath the new root with ``RESOLVE_IN_ROOT |
  RESOLVE_NO_SYMLINKS``; mountpoints are created one component at a time
  relative to descriptors, so a planted link cannot send even a ``mkdir``
  outside the view;
- `mounts` binds descriptor to descriptor (open_tree, mount_setattr on the
  detached copy, move_mount), so the rights are set before it appears.

The same holds for the host directories the trusted side writes into after a
run (the output, the copy-on-write export): `open_dir` opens the launcher's
link-free real path with ``RESOLVE_NO_SYMLINKS``, and everything beneath it is
reached relative to that descriptor. A run granted write above its own output
can rename a parent and plant a link there while it runs; the copy-out then
fails closed (ELOOP) instead of writing where the link points.

This is the kernel's resolver (sandbox/isolation/libc.openat2), the same call
the monitor's resolver uses for the child's own paths (sandbox/monitor/root_walk.py).
"""
from __future__ import annotations

import os
import stat

from sandbox.isolation import libc

_OPATH = os.O_PATH | os.O_CLOEXEC
SOURCE = libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS
VIEW = libc.RESOLVE_IN_ROOT | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS


def _rel(path: str) -> str:
    return path.strip("/") or "."


def open_source(path: str) -> int:
    """An O_PATH descriptor of host `path` as the plan resolved it; ELOOP if any
    component is a symlink now."""
    return libc.openat2(libc.AT_FDCWD, path, _OPATH, 0, SOURCE)


def open_dir(path: str, dir_fd: int = libc.AT_FDCWD) -> int:
    """An O_RDONLY | O_DIRECTORY descriptor of host directory `path` (a link-free real
    path the launcher resolved, or a name relative to `dir_fd`); ELOOP if any
    component is a symlink now, ENOTDIR if it is no directory."""
    return libc.openat2(dir_fd, path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0, SOURCE)


def open_in_view(root_fd: int, path: str) -> int:
    """An O_PATH descriptor of `path` inside the view rooted at `root_fd`."""
    return libc.openat2(root_fd, _rel(path), _OPATH, 0, VIEW)


def open_dir_in_view(root_fd: int, path: str) -> int:
    """An O_RDONLY | O_DIRECTORY descriptor of directory `path` inside the view rooted
    at `root_fd` (to be listed)."""
    return libc.openat2(root_fd, _rel(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                        0, VIEW)


def make_dirs(root_fd: int, path: str) -> int:
    """An O_PATH descriptor of directory `path` in the view, created (0755) where
    missing, one component at a time: a symlink on the way is ELOOP, never followed."""
    cur = os.dup(root_fd)
    try:
        for name in [c for c in path.split("/") if c]:
            try:
                nxt = libc.openat2(cur, name, _OPATH | os.O_DIRECTORY, 0, VIEW)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o755, dir_fd=cur)
                except FileExistsError:
                    pass          # made meanwhile: opened (and checked) below
                nxt = libc.openat2(cur, name, _OPATH | os.O_DIRECTORY, 0, VIEW)
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def make_mountpoint(root_fd: int, path: str, is_dir: bool) -> int:
    """A directory or an empty file at `path` in the view, unless one is there;
    returns an O_PATH descriptor of it (ELOOP if a symlink is in the way)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    if not name:
        return open_in_view(root_fd, "/")
    pfd = make_dirs(root_fd, parent)
    try:
        try:
            if is_dir:
                os.mkdir(name, 0o755, dir_fd=pfd)
            else:
                os.mknod(name, stat.S_IFREG | 0o600, dir_fd=pfd)
        except FileExistsError:
            pass
        return libc.openat2(pfd, name, _OPATH, 0, VIEW)
    finally:
        os.close(pfd)
