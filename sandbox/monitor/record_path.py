"""The path an audit record names: the object the kernel resolves for the caller.

`canonical(root, path, follow_last, info, ids)` is what the audit records and
decides on (sandbox/monitor/audit_paths.py). The common case is the kernel's
own walk from the monitor (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
of the directory part in the sandbox's root, its real path read back, a final
link followed), with a bounded cache of resolved directories (issue 11).

That walk cannot be the caller's where ``/proc`` is on the way: ``self`` and
``thread-self`` name the *reader* (the monitor, which has no pid in the
sandbox's PID namespace), and ``/proc/<pid>/{cwd,root,exe,fd/N,map_files/X}``
are magic links the walk refuses (ELOOP). The path used to be normalised
lexically first and anything landing under ``/proc`` kept as spelled, allowed
(probe 1, F2): ``/proc/self/cwd/x``, ``/proc/self/fd/N/../../x`` and
``/tmp/L/../../proc/x`` were recorded under names the kernel never opened,
with the verdict of ``/proc``. Now such a path is walked here component by
component as the kernel walks it for the caller: ``..`` applies to where a
link led (a real path), ``self`` / ``thread-self`` are the caller's own ids in
the sandbox's PID namespace, and a magic link is read from the sandbox's
``/proc`` (the object's path as the sandbox sees it) and walked on from there.
A magic link naming no path (a pipe, a socket, a deleted file) ends the record
at the link's own name (``/dev/stdout`` when that is how the walk got there).
A name in /proc reached through no link but ``self``/``thread-self`` keeps them
(``/proc/self/stat``: the record's pid says whose), the same record for every
caller, so the compiled loop may answer its repeats; a path through any other
link there is never a key of it: the same spelling names another object after
a chdir or a dup2.
"""
from __future__ import annotations

import errno
import os
import posixpath
import sys
from typing import Any, Callable

from sandbox.monitor.root_walk import (DIR_CACHE_KEY, DIR_CACHE_MAX, MAX_LINKS, RESOLVE_IN_ROOT,
                                       RESOLVE_NO_SYMLINKS, WALK, Root, join, link_target,
                                       openat2, split)

_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_PLAIN = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS     # a real path: nothing on it to follow
DEV_LINKS = frozenset({"/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd"})
_DELETED = " (deleted)"

Ids = Callable[[], "tuple[int, int]"]   # the caller's (tgid, tid) in the sandbox's PID namespace


class _Stop(Exception):
    """The kernel's walk fails here (a missing directory, a loop, no path to go on)."""


def _in_proc(d: str) -> bool:
    return d == "/proc" or d.startswith("/proc/")


def canonical(root: Root, path: str, follow_last: bool, info: list[Any] | None = None,
              ids: Ids | None = None) -> str:
    """The real path `path` names inside the root, for a record (advisory: the caller
    can change its path afterwards). Links in the final name are followed when
    `follow_last` (or the path ends with "/"). Where the kernel's walk fails
    (a missing directory, a loop), the resolved part joined with the rest,
    normalised: the call fails anyway. `ids`: the caller's ids for ``/proc/self``.

    `info`, when given, is set to ``[directory, name]`` when the answer rests on
    nothing but this root's directory cache plus, with `name`, a final name in
    `directory` that is no symlink (what must be checked again for the same answer
    to hold), ``[None, None]`` when it rests on the cache alone; left empty when a
    link was followed, /proc was on the way or the walk failed (notify_fast caches
    only the former). When the answer is a cached directory joined with a final
    name, two more items say which: ``[..., directory, name]`` (notify_fast's
    directory keys)."""
    links = 0
    entry: str | None = None
    while True:
        comps, name, slash = split(path)
        rest = comps + ([name] if name is not None else [])
        key = "/".join(comps)
        d = root._dirs.get(key)
        fd = -1
        try:
            if d is None:
                fd = openat2(root.fd, key or ".", _DIR, 0, WALK)
                d = root.fd_path(fd)
                if _in_proc(d):          # the monitor's /proc is not the caller's
                    raise _Stop
                if len(key) <= DIR_CACHE_KEY:          # bounded before it grows
                    if len(root._dirs) >= DIR_CACHE_MAX:
                        root._dirs.clear()
                        if root.on_forget is not None:   # what rested on it goes too
                            root.on_forget()
                    # interned: runs of one program name the same directories
                    root._dirs[sys.intern(key)] = d = sys.intern(d)
            if name is None:
                if info is not None and not links:
                    info[:] = [None, None]
                return d
            if not (follow_last or slash):
                if info is not None and not links:
                    info[:] = [None, None, d, name]
                return join(d, name)
            text = link_target(root.dir_fd(d) if fd < 0 else fd, name)
        except (_Stop, OSError):
            # /proc on the way (or a real failure): the caller's walk, step by step
            found, same = _walk(root, "/", rest, follow_last or slash, links, ids, entry)
            if same and info is not None and not links:
                info[:] = [None, None]         # e.g. /proc/self/stat: one record for all
            return found
        finally:
            if fd >= 0:
                os.close(fd)
        if text is None:
            if info is not None and not links and not slash:
                info[:] = [d, name, d, name]
            return join(d, name)
        links += 1
        if links > MAX_LINKS or not text:
            return join(d, name)
        if join(d, name) in DEV_LINKS:
            entry = join(d, name)
        path = text if text.startswith("/") else join(d, text)
        if slash and not path.endswith("/"):
            path += "/"


def _walk(root: Root, d: str, todo: list[str], follow_last: bool, links: int,
          ids: Ids | None, entry: str | None) -> tuple[str, bool]:
    """The kernel's walk of `todo` from the real directory `d`, one component at a time,
    with /proc's links taken as the caller's (see the module doc); and whether the
    answer is the same for every caller and every later call (a name in /proc reached
    through no link but `self` or `thread-self`, which stay spelled so in the record:
    the record's pid says whose). `fd` holds `d` (its parent is taken from it for
    `..`: it is a real directory, and the sandbox's root is its own mount tree's
    root, whose `..` is itself), so a long path costs one lookup per component:
    4 KiB of `a/` and `../a/` under a tree 1,000 deep took 63 ms of CPU per call
    when each `..` walked `d` again from the root."""
    stack = list(reversed(todo))
    c, fd = "", -1
    alias: tuple[str, str] | None = None       # ("/proc/self", "/proc/<tgid>") in use
    plain = True

    def shown(p: str) -> str:
        if alias is not None and (p == alias[1] or p.startswith(alias[1] + "/")):
            return alias[0] + p[len(alias[1]):]
        return p

    try:
        while stack:
            c = stack.pop()
            final = not stack
            if c in ("", "."):
                continue
            if c == "..":
                if d == "/":
                    continue
                if alias is not None and d == alias[1]:
                    alias = None                # `..` of thread-self's target is .../task
                if fd >= 0:     # d is real: its `..` is its parent (the kernel's, at a mount)
                    fd, old = os.open("..", _DIR, dir_fd=fd), fd
                    os.close(old)
                d = posixpath.dirname(d)
                continue
            here = join(d, c)
            magic = _in_proc(d) and d != "/proc"
            if d == "/proc" and c in ("self", "thread-self"):
                if final and not follow_last:
                    return here, plain
                links += 1
                d, fd = "/proc/" + _self(c, ids), _close(fd)
                alias = (here, d)
                continue
            if fd < 0:
                fd = openat2(root.fd, d[1:] or ".", _DIR, 0, _PLAIN)
            text = _text(fd, c, final)
            if text is None:
                if not final:
                    fd, old = os.open(c, _DIR | os.O_NOFOLLOW, dir_fd=fd), fd
                    os.close(old)
                d = here
                continue
            if final and not follow_last:
                return shown(here), plain
            links += 1
            plain = False
            if links > MAX_LINKS or not text:
                raise _Stop
            if here in DEV_LINKS:
                entry = posixpath.normpath(join(here, "/".join(reversed(stack))))
            if magic:       # the object's real path, or none
                if not text.startswith("/") or text.endswith(_DELETED):
                    if final:
                        return entry or shown(here), False
                    raise _Stop
                text = _inside(root, text)
            if text.startswith("/"):
                d, fd, alias = "/", _close(fd), None
            stack.extend(reversed(text.split("/")))
            c = ""
        return shown(d), plain and _in_proc(d)
    except (_Stop, OSError):
        left = "/".join([c] + list(reversed(stack)))
        return (posixpath.normpath(join(shown(d), left)) if left else shown(d)), False
    finally:
        _close(fd)


def _close(fd: int) -> int:
    if fd >= 0:
        os.close(fd)
    return -1


def _self(c: str, ids: Ids | None) -> str:
    """What /proc's `self` or `thread-self` names for the caller, under /proc."""
    if ids is None:
        raise _Stop
    tgid, tid = ids()
    return str(tgid) if c == "self" else f"{tgid}/task/{tid}"


def _text(fd: int, c: str, final: bool) -> str | None:
    """The text of `c` in directory `fd` if it is a link, None if it is something else
    (a missing final name too: the call names it, e.g. to create it)."""
    try:
        return link_target(fd, c)
    except OSError as exc:
        if exc.errno == errno.ENOENT and final:
            return None
        raise _Stop from None


def _inside(root: Root, text: str) -> str:
    """A magic link's text (the object's path from the reader's root) inside `root`."""
    prefix = root.prefix
    if not prefix:
        return text
    if text == prefix:
        return "/"
    if text.startswith(prefix + "/"):
        return text[len(prefix):]
    raise _Stop


__all__ = ["canonical", "DEV_LINKS", "Ids"]
