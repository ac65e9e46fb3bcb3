"""Resolve a path the way the kernel would for the sandboxed caller, from inside its root.

The broker (sandbox/monitor/broker.py) performs opens and name changes for the
sandbox. To decide on exactly what it then touches, it must find the object
the *kernel* would have reached from the caller's path, inside the sandbox's
mount view, with nothing the caller can still change:

- the path is our own copy (read once from the caller's memory);
- every directory is held as an O_PATH descriptor while the walk goes on, so
  the directory decided on is the directory acted in;
- symlinks are read here (``readlinkat``) and followed by us: an absolute
  target restarts at the sandbox's root (``/proc/<pid>/root``, opened once), a
  relative one at the directory holding the link; at most 40 per lookup (then
  ELOOP, like the kernel);
- ``..`` is applied *after* following links, to the directory actually
  reached (``ro/link_to_dir/../x`` is the link target's parent's ``x``), and
  never climbs above the sandbox's root (``/..`` is ``/``);
- a component that is missing in the view (a host directory no rule binds,
  the target of a dangling link) fails with ENOENT even if a later ``..``
  would climb back out of it; a non-directory in the middle gives ENOTDIR.

`locate` resolves everything but the last component; the caller decides on
``dir + "/" + name`` and acts relative to ``fd`` without following the final
name (O_NOFOLLOW). When the final name turns out to be a link the caller
follows, it calls `locate` again on the link's target (``links`` carries the
count).

Fast path: one ``openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_MAGICLINKS)`` of the whole directory part. If it succeeds, no
component was a link, so each ``..`` went to the lexical parent of an existing
directory and the canonical path is the lexical one. Only when it meets a link
(ELOOP) does the step-by-step walk below run.

``/proc`` is not walked: its links (``self``, ``<pid>/fd/<n>``, ``cwd``,
``root``) are magic, their text is not what the kernel follows. Reaching it
raises `InProc` with the path spelled lexically, for the broker's own rules.
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
from typing import NamedTuple

SYS_openat2 = 437
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT = 0x02, 0x04, 0x10
MAX_LINKS = 40          # the kernel's MAXSYMLINKS
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_STEP = _DIR | os.O_NOFOLLOW
_FAST = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_SLOW = frozenset({errno.ELOOP, errno.EAGAIN, errno.EXDEV})
_MEMO_MAX = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2); raises OSError like os.open."""
    how = _OpenHow(flags, mode, resolve)
    ret = _libc.syscall(ctypes.c_long(SYS_openat2), ctypes.c_int(dirfd),
                        ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                        ctypes.c_size_t(ctypes.sizeof(how)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return ret


class InProc(Exception):
    """The walk reached /proc; `path` is the rest, spelled lexically under /proc."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Located(NamedTuple):
    fd: int              # O_PATH descriptor of the directory (the caller closes it)
    dir: str             # its canonical path inside the sandbox
    name: str | None     # the final component; None when the path names `dir` itself
    slash: bool          # the path ended with "/" (the final must be a directory)
    links: int           # symlinks followed so far in this lookup


def join(d: str, name: str) -> str:
    return d + name if d.endswith("/") else d + "/" + name


def split(path: str) -> tuple[list[str], str | None, bool]:
    """(directory components, final name or None, trailing slash) of an absolute path;
    `.` components are dropped (they change nothing), `..` kept for the walk."""
    comps = [c for c in path.split("/") if c and c != "."]
    tail = path.rstrip("/").rpartition("/")[2]
    slash = path.endswith("/") and bool(comps)
    name = comps.pop() if tail not in ("", ".", "..") else None
    return comps, name, slash


def _in_proc(d: str) -> bool:
    return d == "/proc" or d.startswith("/proc/")


def locate(root_fd: int, path: str, links: int = 0,
           memo: dict[str, tuple[str, int]] | None = None) -> Located:
    """Resolve every component of absolute `path` but the last (see module doc).

    `memo` (directory part as spelled -> canonical directory, links on the way)
    remembers walks
    that met links, so the next lookup of the same spelling is one openat2 of
    the canonical form, which RESOLVE_NO_SYMLINKS re-checks: it must still be
    link-free and exist, or the entry is dropped and the walk done again. The
    caller clears it whenever the sandbox changes a name.

    Raises OSError (ENOENT, ENOTDIR, ELOOP, EACCES) where the kernel's walk would
    fail, or InProc."""
    comps, name, slash = split(path)
    rel = "/".join(comps)
    if memo:
        hit = memo.get(rel)
        if hit is not None:
            d, used = hit
            if links + used > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            try:
                return Located(openat2(root_fd, d[1:] or ".", _DIR, 0, _FAST), d, name, slash,
                               links + used)
            except OSError:
                del memo[rel]
    try:
        fd = openat2(root_fd, rel or ".", _DIR, 0, _FAST)
    except OSError as exc:
        if exc.errno not in _SLOW:
            raise
        loc = _walk(root_fd, comps, name, slash, links)
        if memo is not None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[rel] = (loc.dir, loc.links - links)
        return loc
    # no link on the way: each `..` went to the lexical parent of a real directory
    d = posixpath.normpath("/" + rel) if ".." in comps else "/" + rel
    if d.startswith("//"):
        d = d[1:]
    if d.startswith("/proc") and _in_proc(d):
        os.close(fd)
        raise InProc(join(d, name) if name else d)
    return Located(fd, d, name, slash, links)


def _walk(root_fd: int, comps: list[str], name: str | None, slash: bool, links: int) -> Located:
    """The step-by-step walk: a stack of O_PATH descriptors from the root down."""
    fds: list[int] = []
    names: list[str] = []
    todo = comps[::-1]
    try:
        while todo:
            c = todo.pop()
            if c == "." or not c:
                continue
            if c == "..":
                if fds:                       # at the root, `..` is the root
                    os.close(fds.pop())
                    names.pop()
                continue
            if not fds and c == "proc":
                rest = posixpath.normpath("/" + "/".join(["proc"] + todo[::-1]
                                                         + ([name] if name else [])))
                if _in_proc(rest):
                    raise InProc(rest)
            cur = fds[-1] if fds else root_fd
            try:
                fds.append(os.open(c, _STEP, dir_fd=cur))
                names.append(c)
                continue
            except OSError as exc:
                if exc.errno != errno.ENOTDIR:
                    raise
                try:
                    target = os.readlink(c, dir_fd=cur)
                except OSError:
                    raise exc from None       # not a link: a file in the middle
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), c)
            if not target:
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), c)
            if target.startswith("/"):
                while fds:
                    os.close(fds.pop())
                names.clear()
            todo.extend(reversed(target.split("/")))
        fd = fds.pop() if fds else os.open(".", _DIR, dir_fd=root_fd)
    finally:
        for f in fds:
            os.close(f)
    return Located(fd, "/" + "/".join(names), name, slash, links)


def link_target(dirfd: int, name: str) -> str | None:
    """The text of `name` in `dirfd` if it is a symlink, None if it is something else.
    Raises OSError(ENOENT) when there is nothing by that name."""
    try:
        return os.readlink(name, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise


def follow(loc: Located, target: str) -> tuple[str, int]:
    """The path to look up next when the final name of `loc` is a link with `target`,
    and the link count; ELOOP past 40, ENOENT for an empty link, like the kernel."""
    links = loc.links + 1
    if links > MAX_LINKS:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), loc.name)
    if not target:
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), loc.name)
    path = target if target.startswith("/") else join(loc.dir, target)
    if loc.slash and not path.endswith("/"):
        path += "/"
    return path, links


__all__ = ["InProc", "Located", "locate", "follow", "link_target", "join", "split",
           "openat2", "MAX_LINKS"]
