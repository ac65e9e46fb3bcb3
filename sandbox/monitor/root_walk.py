"""The one path resolver of the monitor side: the kernel walks, inside the sandbox's root.

Everything that must know which object a sandboxed caller's path names (the
broker that acts for it, the audit that records it) asks the kernel, not a
re-implementation of its walk:

- ``openat2(root, dir, O_PATH | O_DIRECTORY, RESOLVE_IN_ROOT |
  RESOLVE_NO_MAGICLINKS)`` resolves every component but the last exactly as
  the kernel does for a caller whose root is the sandbox's: absolute links
  and ``..`` stay inside it, ``..`` applies after links, a component missing
  from the view is ENOENT, at most 40 links (ELOOP). No ``/proc/<pid>/fd``
  style magic link is ever followed (ELOOP).
- The *real* path of what was reached is read back from the descriptor
  (``/proc/self/fd/N``; d_path prints it relative to the root of the mount
  namespace it lives in, i.e. as the sandbox sees it). Decisions are made on
  that, then the caller acts relative to the descriptor on the final name,
  never following it (O_NOFOLLOW): a final name that is a link is read here
  and its target resolved again (`follow`), so each link is decided on.
  Nothing is ever re-resolved from a name the sandbox can change.

`Root` carries the sandbox's root descriptor and where to read descriptors'
paths (a process that gave up its own ``/proc`` keeps a descriptor of its
``/proc/<pid>/fd`` directory, opened before). `record_path.canonical` is the
advisory form used to record a path (sandbox/monitor/audit_paths.py), built on
this module; `locate` the one the broker acts on (sandbox/monitor/broker_exec.py).

Bounds (issue 11): no cache grows with what the child sends; the resolver
keeps at most `DIR_CACHE_MAX` resolved directories whose spelling is at most
`DIR_CACHE_KEY` bytes (checked before insertion), so the memory a hostile
path stream can make us hold is a few hundred KiB whatever it does.

``/proc`` is not walked through: its links (``self``, ``<pid>/fd/<n>``) are
magic and ``self`` would name the resolver. Reaching it raises `InProc` with
the path spelled lexically, for the broker's own rules.
"""
from __future__ import annotations

import errno
import os
import posixpath
from typing import Any, Callable, NamedTuple

from sandbox.isolation import libc

RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT = (
    libc.RESOLVE_NO_MAGICLINKS, libc.RESOLVE_NO_SYMLINKS, libc.RESOLVE_IN_ROOT)
MAX_LINKS = 40          # the kernel's MAXSYMLINKS
WALK = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
DIR_CACHE_MAX = 1024
DIR_CACHE_KEY = 256
DIR_FDS_MAX = 16        # open descriptors of resolved directories (the audit's hot path)
_DELETED = " (deleted)"

openat2 = libc.openat2


class InProc(Exception):
    """The walk reached /proc; `path` is the rest, spelled lexically under /proc."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


class Located(NamedTuple):
    fd: int              # O_PATH descriptor of the directory (the caller closes it)
    dir: str             # its real path inside the sandbox
    name: str | None     # the final component; None when the path names `dir` itself
    slash: bool          # the path ended with "/" (the final must be a directory)
    links: int           # final-name symlinks followed so far in this lookup


class Root:
    """The sandbox's root for the resolver.

    `fd`: an O_PATH descriptor of the root (``/proc/<pid>/root`` from outside,
    ``/`` from inside). `fd_dir`: a descriptor of this process's
    ``/proc/<pid>/fd`` directory when its own ``/proc`` is not the host's (the
    broker, chrooted into the sandbox), else None. Paths read back are made
    relative to the root's own real path (``/`` for a sandbox's root; the
    tree's path for a test tree)."""

    def __init__(self, fd: int, fd_dir: int | None = None) -> None:
        self.fd = fd
        self.fd_dir = fd_dir
        self._prefix = ""
        top = self.fd_path(fd)
        self._prefix = "" if top == "/" else top
        self._dirs: dict[str, str] = {}
        # real directory path -> its O_PATH descriptor, for reading final-name links without
        # walking again: as stale, and as bounded, as `_dirs` (`forget` closes them all)
        self._dir_fds: dict[str, int] = {}
        # called before the kept descriptors close (and the directory cache is stale): the
        # audit's compiled cache (notify_fast) names them and is cleared with them
        self.on_forget: Callable[[], None] | None = None

    def fd_path(self, fd: int) -> str:
        """The real path of descriptor `fd` inside the root; ENOENT when it is not
        reachable from it, or was deleted."""
        if self.fd_dir is None:
            text = os.readlink(f"/proc/self/fd/{fd}")
        else:
            text = os.readlink(str(fd), dir_fd=self.fd_dir)
        if not text.startswith("/") or text.endswith(_DELETED) and _unlinked(fd):
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), text)
        if self._prefix:
            if text == self._prefix:
                return "/"
            if not text.startswith(self._prefix + "/"):
                raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), text)
            return text[len(self._prefix):]
        return text

    @property
    def prefix(self) -> str:
        """The root's own real path when it is not "/" (a test tree), else ""."""
        return self._prefix

    def forget(self) -> None:
        """A name changed in the sandbox: resolved directories may be stale."""
        self._dirs.clear()
        self._close_dir_fds()

    def _close_dir_fds(self) -> None:
        if self.on_forget is not None:
            self.on_forget()
        fds, self._dir_fds = self._dir_fds, {}
        for fd in fds.values():
            try:
                os.close(fd)
            except OSError:
                pass

    def dir_fd(self, d: str) -> int:
        """A descriptor of the resolved directory `d` (kept: do not close it)."""
        fd = self._dir_fds.get(d)
        if fd is None:
            fd = openat2(self.fd, d[1:] or ".", _DIR, 0, WALK)
            if len(self._dir_fds) >= DIR_FDS_MAX:
                self._close_dir_fds()
            self._dir_fds[d] = fd
        return fd

    def close(self) -> None:
        self._close_dir_fds()
        for fd in (self.fd, self.fd_dir):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _unlinked(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


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


def locate(root: Root, path: str, links: int = 0) -> Located:
    """Resolve every component of absolute `path` but the last, by the kernel.

    Raises OSError (ENOENT, ENOTDIR, ELOOP, EACCES) where the kernel's walk
    fails, or InProc when the directory is in /proc."""
    comps, name, slash = split(path)
    if comps[:1] == ["proc"] and ".." not in comps:
        raise InProc(posixpath.normpath(path))
    fd = openat2(root.fd, "/".join(comps) or ".", _DIR, 0, WALK)
    try:
        d = root.fd_path(fd)
    except OSError:
        os.close(fd)
        raise
    if _in_proc(d):
        os.close(fd)
        raise InProc(join(d, name) if name else d)
    return Located(fd, d, name, slash, links)


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


__all__ = ["InProc", "Located", "Root", "locate", "follow", "link_target", "join", "split",
           "openat2", "MAX_LINKS", "WALK", "DIR_CACHE_KEY", "DIR_CACHE_MAX"]
