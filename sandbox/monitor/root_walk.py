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


# -- what the kernel would answer the caller ---------------------------------------------------

SYS_capget, SYS_capset, _CAP_V3 = 125, 126, 0x20080522
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3
AT_EACCESS, AT_SYMLINK_NOFOLLOW = 0x200, 0x100
W_OK, X_OK = 2, 1


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_dac_caps() -> bool:
    """Drop CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the *calling
    thread's* effective set (capset(2) is per thread; other threads keep theirs).

    WHY: the sandbox maps its uid to the monitor's and has no capabilities, so
    without them the broker's file-permission checks are the caller's: a
    monitor run as root neither opens a mode-600 file of another user the
    caller could not (the policy may grant the tree, DAC still applies), nor
    walks into a mode-0 mask directory (EACCES, as the kernel tells the caller).
    Ptrace-style access to the caller (/proc/<pid>/mem, root) needs no DAC
    capability: same uid. Returns False when capset failed (nothing changed)."""
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    if _libc.syscall(ctypes.c_long(SYS_capget), ctypes.byref(hdr), data) < 0:
        return False
    mask = ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_FOWNER)) \
        & 0xFFFFFFFF
    if not data[0].effective & ~mask:
        return True
    data[0].effective &= mask
    return _libc.syscall(ctypes.c_long(SYS_capset), ctypes.byref(hdr), data) == 0


def _access(dirfd: int, name: str, mode: int) -> int:
    """faccessat(AT_EACCESS | AT_SYMLINK_NOFOLLOW): 0 or the errno. The kernel checks
    the file's permission bits, then a read-only mount (EROFS) for W_OK: the order
    an open or unlink meets them."""
    ret = _libc.faccessat(ctypes.c_int(dirfd), ctypes.c_char_p(os.fsencode(name)),
                          ctypes.c_int(mode), ctypes.c_int(AT_EACCESS | AT_SYMLINK_NOFOLLOW))
    return ctypes.get_errno() if ret != 0 else 0


def _mount_id(fd: int) -> str | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return line.split()[1]
    except OSError:
        pass
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
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        exists = True
    except FileNotFoundError:
        exists = False
    except OSError as exc:
        return exc.errno or errno.EACCES
    if op == "write" or (op == "create" and exists and opening):
        return (_access(dirfd, name, W_OK) or errno.EACCES) if exists else errno.ENOENT
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


__all__ = ["InProc", "Located", "locate", "follow", "link_target", "join", "split",
           "openat2", "MAX_LINKS", "drop_dac_caps", "refusal"]
