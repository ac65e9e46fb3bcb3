"""What the broker process does for one request: resolve, decide, act, as the sandbox.

This code runs in the broker process (sandbox/monitor/broker_process.py):
the sandbox's credentials, no capability in any set, the sandbox's user,
mount and network namespaces and root, its Landlock domain and
no_new_privs. So whatever it does, the kernel checks as if the sandbox did
it: DAC as the caller, read-only binds, device rules, CAP_SYSLOG for
``/proc/kmsg``, ``kallsyms`` addresses. What it adds is the policy's deny
rules that no kernel layer could express (a deny glob inside a writable
tree), decided on the real path of what the kernel reached:

1. the path is the monitor's copy (read once from the caller's memory);
2. the kernel resolves it in the sandbox's root (sandbox/monitor/root_walk.py):
   the directory is held as a descriptor and its real path read back;
3. the engine decides on ``dir + "/" + name``; denied -> EACCES (or the
   kernel's errno where it would fail first: ENOENT, EEXIST, ELOOP);
4. the call is made relative to that descriptor, never following a link in
   the final name (O_NOFOLLOW): a final name that is a link is read, and its
   target resolved and decided again (open, truncate, linkat with
   AT_SYMLINK_FOLLOW; unlink, rename and link act on the link itself).

Refused outright: device nodes (mknod of a character or block device has no
policy meaning; EPERM, as the kernel tells an unprivileged caller). ``/proc``
(and ``/dev/stdin``, ``stdout``, ``stderr``, ``fd``) are handled lexically:
``self`` names the caller (its ids come in the request), and no path may go
*through* a magic link (cwd, root, exe, fd/N, map_files/X).
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass
from typing import Any, Protocol

from sandbox.isolation.libc import renameat2
from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.refusals import Denied, bad_final, refusal
from sandbox.monitor.root_walk import (RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS,
                                       RESOLVE_NO_SYMLINKS, InProc, Located, Root, follow,
                                       join, link_target, locate, openat2, split)

_MAGIC = frozenset({"cwd", "root", "exe", "fd", "map_files"})
_DEV_STD = ("/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd")
MAGIC_RULE = "sandbox: through a magic link"
DEVICE_RULE = "sandbox: device nodes are never made for the sandbox"
Record = tuple[str, str, bool, str]



class Engine(Protocol):
    def decide(self, op: str, path: str) -> Any: ...


@dataclass(frozen=True)
class Request:
    """One call to perform, as the monitor copied it out of the caller.

    `paths`: the absolute path of each slot (cwd or dirfd already applied).
    `tgid`/`tid`: the caller's ids in the sandbox's PID namespace (``/proc/self``).
    `umask`: the caller's, for creations. `length`: truncate's. `dev`: mknod's."""
    call: str
    kind: str
    flags: int
    mode: int
    paths: tuple[str, ...]
    link_text: str = ""
    umask: int | None = None
    tgid: int = 0
    tid: int = 0
    length: int = 0
    dev: int = 0


def lexical_special(path: str) -> str | None:
    """/proc/... or /dev/{stdin,stdout,stderr,fd}... spelled without `..`: handled
    lexically (their links are magic), as the record's path."""
    if not path.startswith(("/proc", "/dev/")):
        return None
    comps, name, _ = split(path)
    if ".." in comps or name is None and path.rstrip("/").endswith(".."):
        return None
    n = posixpath.normpath(path)
    if n == "/proc" or n.startswith("/proc/"):
        return n
    for d in _DEV_STD:
        if n == d or n.startswith(d + "/"):
            return n
    return None


def _exists(dir_fd: int, name: str) -> bool:
    """`name` in `dir_fd` exists and is no symlink (never followed)."""
    try:
        return not stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _err(code: int, what: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), what)


class Executor:
    """Resolves, decides and performs requests; see the module doc."""

    def __init__(self, engine: Engine, root: Root, unix: tuple[str, ...] = ()) -> None:
        self.engine = engine
        self.root = root
        self.unix = unix            # network.unix: sockets outside it may reach

    def _decide(self, op: str, path: str) -> Any:
        v = self.engine.decide(op, path)
        if not v.allowed:
            raise Denied(errno.EACCES, op, path, v.rule)
        return v

    def _note(self, exc: OSError, op: str, path: str) -> OSError:
        """Give a failed call a record of what it was about (our copy, lexically) when
        it failed before a decision (a walk that stopped: ENOENT, ENOTDIR, ELOOP)."""
        if getattr(exc, "records", None) is None:
            p = posixpath.normpath(path) if path.startswith("/") else path
            v = self.engine.decide(op, p) if p.startswith("/") else None
            exc.records = [(op, p, bool(v and v.allowed),   # type: ignore[attr-defined]
                            v.rule if v else "default: not an absolute path")]
        return exc

    # -- entry point -------------------------------------------------------------------------
    def execute_net(self, req: Any, fds: list[int]) -> tuple[int, list[Record]]:
        """A connect or addressed send (sandbox/monitor/broker_net.py): (value, records)."""
        from sandbox.monitor.broker_net import execute_net   # only when a run brokers sockets
        return execute_net(self.root, self.unix, req, fds)

    def execute(self, req: Request) -> tuple[int | None, list[Record]]:
        """(descriptor or None, records); raises Denied or OSError (with .records)."""
        if req.kind in ("open", "openat2", "creat"):
            op = S.open_operation(req.flags)
            return self.open_path(req, req.paths[0], op, req.flags, req.mode)
        return None, self.change(req)

    # -- open --------------------------------------------------------------------------------
    def open_path(self, req: Request, path: str, op: str, flags: int, mode: int
                  ) -> tuple[int, list[Record]]:
        """Open `path` (our own copy) as the kernel would for the caller (module doc)."""
        special = lexical_special(path)
        if special is not None:
            return self._open_special(req, special, op, flags, mode)
        umask = req.umask if flags & (S.O_CREAT | S.O_TMPFILE) else None
        links = 0
        asked = path
        try:
            while True:
                try:
                    loc = locate(self.root, path, links)
                except InProc as p:
                    return self._open_special(req, p.path, op, flags, mode)
                try:
                    got = self._open_at(loc, op, flags, mode, umask)
                finally:
                    os.close(loc.fd)
                if not isinstance(got, str):
                    return got
                path, links = follow(loc, got)
        except OSError as exc:
            raise self._note(exc, op, asked) from None

    def _open_at(self, loc: Located, op: str, flags: int, mode: int, umask: int | None
                 ) -> tuple[int, list[Record]] | str:
        """Decide and open the final component of `loc`; or the text of the link it
        is, when the kernel would follow it."""
        sysflags = flags | S.O_CLOEXEC
        name = loc.name
        if name is None:                      # "/", "dir/.", "dir/..": the directory itself
            target = loc.dir
            v = self._decide(op, target)
            return self._sys_open(".", sysflags, mode, loc.fd, umask, op, target, v.rule), \
                [(op, target, True, v.rule)]
        creat = flags & S.O_CREAT
        excl = creat and flags & S.O_EXCL
        if loc.slash and creat:
            raise _err(errno.EISDIR, name)     # the kernel's answer, before any permission
        if creat and not excl and op == "create" and _exists(loc.fd, name):
            # O_CREAT on an existing file (not a link, which is followed below) creates
            # nothing: the kernel opens it as it is, so it is decided and opened so
            # (`sh`'s `2>/dev/null`, a log opened for appending). Without O_CREAT: if it
            # goes meanwhile, ENOENT rather than a file made on a "write" verdict.
            flags &= ~S.O_CREAT
            sysflags, creat, op = flags | S.O_CLOEXEC, 0, S.open_operation(flags)
        can_follow = not excl and (loc.slash or not flags & S.O_NOFOLLOW)
        target = join(loc.dir, name)
        v = self.engine.decide(op, target)
        if not v.allowed:
            # before refusing: a link is decided on its target (when followed), and
            # where the kernel fails before any permission check, its errno
            try:
                text = link_target(loc.fd, name)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise Denied(exc.errno or errno.EACCES, op, target, v.rule) from None
                raise Denied(refusal(loc.fd, name, op, opening=True) if creat
                             else errno.ENOENT, op, target, v.rule) from None
            if text is not None and can_follow:
                return text
            if excl:
                raise Denied(errno.EEXIST, op, target, v.rule)
            if text is not None and not flags & S.O_PATH:
                raise Denied(errno.ELOOP, op, target, v.rule)
            raise Denied(refusal(loc.fd, name, op, opening=True), op, target, v.rule)
        if target == "/dev/tty":
            # the opener's controlling terminal: the caller has none (setsid, privileges
            # layer), so the kernel says ENXIO; never whatever terminal we might have
            no_tty = _err(errno.ENXIO, target)
            no_tty.records = [(op, target, True, v.rule)]   # type: ignore[attr-defined]
            raise no_tty
        extra = os.O_NOFOLLOW | (os.O_DIRECTORY if loc.slash else 0)
        try:
            fd = self._sys_open(name, sysflags | extra, mode, loc.fd, umask, op, target, v.rule)
        except OSError as exc:
            # O_NOFOLLOW on a link: ELOOP (ENOTDIR with O_DIRECTORY); follow it
            if can_follow and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                try:
                    text = link_target(loc.fd, name)
                except OSError:
                    text = None
                if text is not None:
                    return text
            raise
        if flags & S.O_PATH and can_follow and stat.S_ISLNK(os.fstat(fd).st_mode):
            try:                               # O_PATH|O_NOFOLLOW opened the link itself
                return os.readlink("", dir_fd=fd)
            finally:
                os.close(fd)
        return fd, [(op, target, True, v.rule)]

    @staticmethod
    def _sys_open(name: str, flags: int, mode: int, dirfd: int, umask: int | None,
                  op: str, target: str, rule: str) -> int:
        old = os.umask(umask) if umask is not None else None
        try:
            return os.open(name, flags, mode, dir_fd=dirfd)
        except OSError as exc:
            exc.records = [(op, target, True, rule)]   # type: ignore[attr-defined]
            raise
        finally:
            if old is not None:
                os.umask(old)

    @staticmethod
    def _proc_rel(req: Request, path: str, op: str) -> str:
        """`path` under /proc (or a /dev link into it) relative to the root, `self`
        made the caller's pid in the sandbox's PID namespace; Denied through a magic link."""
        tgid, tid = req.tgid, req.tid
        rel = path[1:]
        for old, new in (("dev/stdin", f"proc/{tgid}/fd/0"), ("dev/stdout", f"proc/{tgid}/fd/1"),
                         ("dev/stderr", f"proc/{tgid}/fd/2"), ("dev/fd", f"proc/{tgid}/fd"),
                         ("proc/thread-self", f"proc/{tgid}/task/{tid}"),
                         ("proc/self", f"proc/{tgid}"), ("proc/mounts", f"proc/{tgid}/mounts"),
                         ("proc/net", f"proc/{tgid}/net")):
            if rel == old or rel.startswith(old + "/"):
                rel = new + rel[len(old):]
                break
        parts = rel.split("/")
        for i, part in enumerate(parts[:-1]):
            nxt = i + 2 if part in ("fd", "map_files") else i + 1
            if part in _MAGIC and i >= 2 and nxt < len(parts):
                raise Denied(errno.EACCES, op, path, "")   # a path through a magic link
        return rel

    def _open_special(self, req: Request, path: str, op: str, flags: int, mode: int
                      ) -> tuple[int, list[Record]]:
        """/proc and the /dev links into it: the sandbox's own; nothing may follow a
        magic link but the final component (the caller's own descriptor, cwd, ...)."""
        v = self.engine.decide(op, path)
        parts = self._proc_rel(req, path, op).split("/")
        if len(parts) > 1:
            pfd = openat2(self.root.fd, "proc", os.O_PATH | os.O_DIRECTORY
                          | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
            try:
                if not v.allowed:    # procfs has no negative names: ENOENT first
                    rel = "/".join(parts[1:])
                    try:
                        os.stat(rel, dir_fd=pfd, follow_symlinks=False)
                        err = refusal(pfd, rel, op, opening=True)
                    except OSError as exc:
                        err = exc.errno or errno.EACCES
                    raise Denied(err, op, path, v.rule)
                rel = "/".join(parts[1:])
                try:
                    magic = parts[-2] in ("fd", "map_files") or parts[-1] in _MAGIC
                    if not magic or flags & S.O_NOFOLLOW:
                        fd = os.open(rel, flags | S.O_CLOEXEC, mode, dir_fd=pfd)
                    else:
                        return self._reopen(pfd, rel, op, path, flags, v.rule)
                except OSError as exc:
                    if getattr(exc, "records", None) is None:
                        exc.records = [(op, path, True, v.rule)]   # type: ignore[attr-defined]
                    raise
                return fd, [(op, path, True, v.rule)]
            finally:
                os.close(pfd)
        if not v.allowed:
            raise Denied(errno.EACCES, op, path, v.rule)
        return openat2(self.root.fd, "proc", flags | S.O_CLOEXEC, mode,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), [(op, path, True, v.rule)]

    def _reopen(self, pfd: int, rel: str, op: str, path: str, flags: int, rule: str
                ) -> tuple[int, list[Record]]:
        """A magic link of the caller (fd/N, cwd, root, exe): what it names is decided
        on, not the link: an O_PATH descriptor of a denied file (or one opened before a
        rule applied) must not become readable through /proc/self/fd/N."""
        held = os.open(rel, os.O_PATH | os.O_CLOEXEC, dir_fd=pfd)
        try:
            st = os.fstat(held)
            if st.st_dev == os.fstat(pfd).st_dev:            # a procfs object itself
                return os.open(rel, flags | S.O_CLOEXEC, 0, dir_fd=pfd), [(op, path, True, rule)]
            try:
                real: str | None = self.root.fd_path(held)
            except OSError:
                real = None        # a pipe, socket or anonymous inode: no name to decide on
            recs = [(op, path, True, rule)]
            if real is not None:
                v = self.engine.decide(op, real)
                if not v.allowed:
                    raise Denied(errno.EACCES, op, real, v.rule)
                recs.append((op, real, True, v.rule))
            name = str(held) if self.root.fd_dir is not None else f"/proc/self/fd/{held}"
            fd = os.open(name, (flags & ~S.O_CREAT) | S.O_CLOEXEC, 0, dir_fd=self.root.fd_dir)
            return fd, recs
        finally:
            os.close(held)

    # -- the other name-changing calls -------------------------------------------------------
    def change(self, req: Request) -> list[Record]:
        name, flags = req.call, req.flags
        if name == "truncate":
            fd, recs = self.open_path(req, req.paths[0], "write", os.O_WRONLY, 0)
            try:
                os.ftruncate(fd, req.length)
            finally:
                os.close(fd)
            return recs
        if name.startswith("mknod") and stat.S_IFMT(req.mode) in (stat.S_IFCHR, stat.S_IFBLK):
            raise Denied(errno.EPERM, "create", posixpath.normpath(req.paths[0]), DEVICE_RULE)
        held: list[int] = []
        recs = []
        try:
            finals = []
            for i, ((_, _, op, _), path) in enumerate(zip(S.SPECS[name].slots, req.paths)):
                assert op is not None
                follow_last = bool(i == 0 and name == "linkat" and flags & S.AT_SYMLINK_FOLLOW)
                loc = self._locate_final(path, op, follow_last, held)
                bad = bad_final(name, i, loc, flags, path)
                if bad:
                    raise self._note(_err(bad, path), op, path)
                target = join(loc.dir, loc.name)   # type: ignore[arg-type]
                v = self.engine.decide(op, target)
                if not v.allowed:
                    raise Denied(refusal(loc.fd, loc.name, op), op, target, v.rule)  # type: ignore[arg-type]
                recs.append((op, target, True, v.rule))
                finals.append(loc)
            self.root.forget()
            self._do(req, [f.fd for f in finals], [f.name for f in finals])
            return recs
        except Denied as d:
            # keep the records of slots already decided (e.g. rename's source)
            d.previous = recs   # type: ignore[attr-defined]
            raise
        except OSError as exc:
            exc.records = recs + (getattr(exc, "records", None) or [])  # type: ignore[attr-defined]
            raise
        finally:
            for fd in held:
                os.close(fd)

    def _locate_final(self, path: str, op: str, follow_last: bool, held: list[int]) -> Located:
        """locate(), plus following a final link when the call does (linkat with
        AT_SYMLINK_FOLLOW); every descriptor opened goes to `held`."""
        links = 0
        asked = path
        while True:
            try:
                loc = locate(self.root, path, links)
            except InProc as p:
                raise Denied(errno.EACCES, op, p.path,
                             "sandbox: /proc is not changed through the monitor") from None
            except OSError as exc:
                raise self._note(exc, op, asked) from None
            held.append(loc.fd)
            if not follow_last or loc.name is None:
                return loc
            try:
                text = link_target(loc.fd, loc.name)
                if text is None:
                    return loc
                path, links = follow(loc, text)
            except OSError as exc:
                raise self._note(exc, op, asked) from None

    @staticmethod
    def _do(req: Request, fds: list[int], names: list[Any]) -> None:
        """The call itself, relative to the held directories, on the decided names."""
        name, flags = req.call, req.flags
        if name in ("unlink", "rmdir", "unlinkat"):
            if name == "rmdir" or (name == "unlinkat" and flags & S.AT_REMOVEDIR):
                os.rmdir(names[0], dir_fd=fds[0])
            else:
                os.unlink(names[0], dir_fd=fds[0])
        elif name in ("mkdir", "mkdirat", "mknod", "mknodat"):
            old = os.umask(req.umask or 0)
            try:
                if name.startswith("mkdir"):
                    os.mkdir(names[0], req.mode & 0o7777, dir_fd=fds[0])
                else:
                    os.mknod(names[0], req.mode & 0xFFFFFFFF, req.dev, dir_fd=fds[0])
            finally:
                os.umask(old)
        elif name.startswith("rename"):
            if name == "renameat2" and flags:
                renameat2(fds[0], names[0], fds[1], names[1], flags)
            else:
                os.rename(names[0], names[1], src_dir_fd=fds[0], dst_dir_fd=fds[1])
        elif name.startswith("link"):
            # the source was resolved already (a followed link is its target's name)
            os.link(names[0], names[1], src_dir_fd=fds[0], dst_dir_fd=fds[1],
                    follow_symlinks=False)
        elif name.startswith("symlink"):
            os.symlink(req.link_text, names[0], dir_fd=fds[0])
        else:
            raise OSError(errno.ENOSYS, name)


__all__ = ["Executor", "Request", "Denied", "Record", "lexical_special", "MAGIC_RULE"]
