"""The monitor performs opens and name changes itself, where the kernel layers cannot deny.

Used only when the policy has *guarded* trees (deny rules whose paths the
mount view could not hide because they did not exist yet, inside a writable
tree, e.g. ``deny = ["${OUTPUT}/*.pem"]``). Answering CONTINUE there would be
unsafe: the path the monitor read can be swapped by another thread before the
kernel reads it, and no kernel layer would stop the swapped one. And since
*any* open could be swapped into a guarded tree, every open and every
name-changing call (creat, mkdir, mknod, unlink, rmdir, rename, link, symlink,
truncate) is brokered, whatever path was read:

1. the path is copied once out of the sandbox's memory; from then on only our
   copy is used (the race is gone: what we decide is what we do);
2. it is resolved the way the kernel would, inside the sandbox's root
   (sandbox/monitor/root_walk.py): every directory held as an O_PATH
   descriptor, links read and followed by us (at most 40), ``..`` applied to
   the directory actually reached, a component missing from the view ENOENT;
3. the engine decides on the resolved directory + final name; denied -> EACCES
   (or the kernel's errno where it would fail first: ENOENT, EEXIST, ELOOP);
4. the call is made relative to that descriptor, never following a link in
   the final name (O_NOFOLLOW): a final name that is a link is read, and its
   target resolved and decided again (open, truncate, linkat with
   AT_SYMLINK_FOLLOW; unlink, rename and link act on the link itself);
5. an opened descriptor is installed in the caller (SECCOMP_IOCTL_NOTIF_ADDFD
   with ADDFD_FLAG_SEND: the syscall returns its number); other calls return
   0 or the errno the monitor got.

Going through the sandbox's root, the call sees the sandbox's mount view
(read-only binds stay read-only, masks stay masks); Landlock does not apply to
the monitor, which is why step 3 decides everything the Landlock domain would.
Files are created with the caller's umask, owned by the monitor's uid (the
uid the sandbox's is mapped to). ``/proc`` (and ``/dev/stdin``, ``stdout``,
``stderr``, ``fd``) are handled lexically: ``self`` names the caller, and no
path may go *through* a magic link (cwd, root, exe, fd/N, map_files/X).

Not brokered (recorded and answered as usual): stat/access/readlink (metadata
of a denied name may be seen), chmod/chown/utime (metadata changes), exec
(a write tree is not executable unless the policy says so; see docs/audit.md).
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat
from typing import Any

from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.audit_paths import AT_FDCWD
from sandbox.monitor.refusals import bad_final, drop_dac_caps, refusal
from sandbox.monitor.root_walk import (RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS,
                                       RESOLVE_NO_SYMLINKS, InProc, Located, follow, join,
                                       link_target, locate, openat2, split)
from sandbox.monitor.seccomp_notify import SECCOMP_ADDFD_FLAG_SEND

SYS_renameat2 = 316
BROKERED = frozenset({"open", "openat", "openat2", "creat", "truncate", "unlink", "unlinkat",
                      "rmdir", "mkdir", "mkdirat", "mknod", "mknodat", "rename", "renameat",
                      "renameat2", "link", "linkat", "symlink", "symlinkat"})
_MAGIC = frozenset({"cwd", "root", "exe", "fd", "map_files"})
_DEV_STD = ("/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/fd")
_MAGIC_RULE = "sandbox: through a magic link"
Record = tuple[str, str, bool, str]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def renameat2(sfd: int, src: str, dfd: int, dst: str, flags: int) -> None:
    ret = _libc.syscall(ctypes.c_long(SYS_renameat2), ctypes.c_int(sfd),
                        ctypes.c_char_p(os.fsencode(src)), ctypes.c_int(dfd),
                        ctypes.c_char_p(os.fsencode(dst)), ctypes.c_uint(flags))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


def _lexical_special(path: str) -> str | None:
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


def _err(code: int, what: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), what)


class Denied(Exception):
    def __init__(self, err: int, op: str, path: str, rule: str) -> None:
        super().__init__(err)
        self.err, self.op, self.path, self.rule = err, op, path, rule


class Broker:
    def __init__(self, loop: Any, guarded: tuple[str, ...]) -> None:
        self.loop = loop
        self.guarded = guarded
        self._nspid: dict[int, tuple[int, int]] = {}
        self._thread_ready = False
        self.dac_dropped = False
        # walks through links, remembered until the sandbox changes a name (root_walk.locate)
        self._memo: dict[str, tuple[str, int]] = {}

    @staticmethod
    def handles(name: str) -> bool:
        return name in BROKERED

    # -- helpers -----------------------------------------------------------------------------
    def _status(self, pid: int) -> dict[str, str]:
        out = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    def _umask(self, pid: int) -> int:
        try:
            return int(self._status(pid).get("Umask", "022"), 8)
        except (OSError, ValueError):
            return 0o022

    def _ns_ids(self, pid: int) -> tuple[int, int]:
        hit = self._nspid.get(pid)
        if hit is None:
            st = self._status(pid)
            hit = (int(st["NStgid"].split()[-1]), int(st["NSpid"].split()[-1]))
            if len(self._nspid) > 4096:
                self._nspid.clear()
            self._nspid[pid] = hit
        return hit

    def _decide(self, op: str, path: str) -> Any:
        v = self.loop.engine.decide(op, path)
        if not v.allowed:
            raise Denied(errno.EACCES, op, path, v.rule)
        return v

    def _note(self, exc: OSError, op: str, path: str) -> OSError:
        """Give a failed call a record of what it was about (our copy, lexically) when
        it failed before a decision (a walk that stopped: ENOENT, ENOTDIR, ELOOP)."""
        if getattr(exc, "records", None) is None:
            p = posixpath.normpath(path) if path.startswith("/") else path
            v = self.loop.engine.decide(op, p) if p.startswith("/") else None
            exc.records = [(op, p, bool(v and v.allowed),   # type: ignore[attr-defined]
                            v.rule if v else "default: not an absolute path")]
        return exc

    # -- entry point -------------------------------------------------------------------------
    def handle(self, n: Any, name: str, spec: S.Spec, flags: int) -> bool:
        loop = self.loop
        if loop.paths.root_fd is None:
            return False        # cannot broker without the root: the layers decide
        if not self._thread_ready:      # the serving thread checks files as the caller
            self.dac_dropped = drop_dac_caps()
            self._thread_ready = True
        pid, args = n.pid, n.args
        lst = loop.listener
        records: list[Record] = []
        result = "ok"
        try:
            if spec.kind in ("open", "openat2", "creat"):
                fd, recs = self._open(n, name, spec, flags)
                records += recs
                try:
                    lst.addfd(n.id, fd, SECCOMP_ADDFD_FLAG_SEND,
                              newfd_flags=os.O_CLOEXEC if flags & S.O_CLOEXEC else 0)
                finally:
                    os.close(fd)
            else:
                records += self._other(n, name, spec, flags)
                lst.respond_value(n.id, 0)
        except Denied as d:
            records += getattr(d, "previous", [])
            records.append((d.op, d.path, False, d.rule or _MAGIC_RULE))
            result = errno.errorcode.get(d.err, str(d.err))
            if d.rule:
                loop.tally.monitor_denied += 1
            self._answer_error(n.id, d.err)
        except OSError as exc:
            result = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            records += getattr(exc, "records", None) or []
            if not records:
                records.append(self._fallback_record(pid, args, spec, flags))
            self._answer_error(n.id, exc.errno or errno.EIO)
        loop.tally.brokered += 1
        flag_text = loop._flag_text(name, spec.kind, flags, pid, args)
        for op, path, allowed, rule in records:
            loop.record(pid, op, name, path, flag_text, allowed, rule, "monitor", result)
        return True

    def _answer_error(self, nid: int, err: int) -> None:
        try:
            self.loop.listener.respond_error(nid, err)
        except OSError:
            pass

    def _fallback_record(self, pid: int, args: Any, spec: S.Spec, flags: int) -> Record:
        """The record of a call that failed before its path was even copied."""
        dirfd_arg, path_arg, op, _ = spec.slots[0]
        try:
            raw = self.loop.paths.read(pid, args[path_arg])
            path = self.loop.paths.absolute(pid, None if dirfd_arg is None else args[dirfd_arg], raw)
        except Exception:
            path = "?"
        op = op or S.open_operation(flags)
        v = self.loop.engine.decide(op, os.path.normpath(path)) if path.startswith("/") else None
        return (op, path, bool(v and v.allowed), v.rule if v else "default: not an absolute path")

    # -- open --------------------------------------------------------------------------------
    def _open(self, n: Any, name: str, spec: S.Spec, flags: int) -> tuple[int, list[Record]]:
        pid, args = n.pid, n.args
        paths = self.loop.paths
        dirfd_arg, path_arg = spec.slots[0][0], spec.slots[0][1]
        if spec.kind == "creat":
            mode = args[1]
        elif spec.kind == "openat2":
            mode = self._openat2_mode(pid, args[2], args[3])
        else:
            mode = args[spec.flags_arg + 1]
        mode &= 0o7777
        raw = paths.read(pid, args[path_arg])
        dirfd = None if dirfd_arg is None else args[dirfd_arg]
        op = S.open_operation(flags)
        path = paths.absolute(pid, dirfd, raw)
        return self._open_path_copy(pid, path, op, flags, mode)

    def _open_path_copy(self, pid: int, path: str, op: str, flags: int, mode: int
                        ) -> tuple[int, list[Record]]:
        """Open `path` (our own copy) as the kernel would for the caller (module doc)."""
        special = _lexical_special(path)
        if special is not None:
            return self._open_special(pid, special, op, flags, mode)
        umask = self._umask(pid) if flags & (S.O_CREAT | S.O_TMPFILE) else None
        root = self.loop.paths.root_fd
        links = 0
        asked = path
        try:
            while True:
                try:
                    loc = locate(root, path, links, self._memo)
                except InProc as p:
                    return self._open_special(pid, p.path, op, flags, mode)
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
        can_follow = not excl and (loc.slash or not flags & S.O_NOFOLLOW)
        target = join(loc.dir, name)
        v = self.loop.engine.decide(op, target)
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
            # the opener's controlling terminal: the monitor's would be the user's; the
            # caller has none (setsid, privileges layer), so the kernel says ENXIO
            exc = _err(errno.ENXIO, target)
            exc.records = [(op, target, True, v.rule)]   # type: ignore[attr-defined]
            raise exc
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

    def _openat2_mode(self, pid: int, how: int, size: int) -> int:
        if not how or size < 16:
            return 0
        data = self.loop.paths.mem.read(pid, how + 8, 8)
        return int.from_bytes(data, "little") if len(data) == 8 else 0

    def _proc_rel(self, pid: int, path: str, op: str) -> str:
        """`path` under /proc (or a /dev link into it) relative to the root, `self`
        made the caller's pid in the sandbox's PID namespace; Denied through a magic link."""
        tgid, tid = self._ns_ids(pid)
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

    def _open_special(self, pid: int, path: str, op: str, flags: int, mode: int
                      ) -> tuple[int, list[Record]]:
        """/proc and the /dev links into it: the sandbox's own; nothing may follow a
        magic link but the final component (the caller's own descriptor, cwd, ...)."""
        v = self.loop.engine.decide(op, path)
        parts = self._proc_rel(pid, path, op).split("/")
        if len(parts) > 1:
            pfd = openat2(self.loop.paths.root_fd, "proc", os.O_PATH | os.O_DIRECTORY
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
                return os.open("/".join(parts[1:]), flags | S.O_CLOEXEC, mode, dir_fd=pfd), \
                    [(op, path, True, v.rule)]
            finally:
                os.close(pfd)
        if not v.allowed:
            raise Denied(errno.EACCES, op, path, v.rule)
        return openat2(self.loop.paths.root_fd, "proc", flags | S.O_CLOEXEC, mode,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), [(op, path, True, v.rule)]

    # -- the other name-changing calls -------------------------------------------------------
    def _other(self, n: Any, name: str, spec: S.Spec, flags: int) -> list[Record]:
        pid, args = n.pid, n.args
        paths = self.loop.paths
        if name == "truncate":
            raw = paths.read(pid, args[0])
            fd, recs = self._open_path_copy(pid, paths.absolute(pid, None, raw), "write",
                                            os.O_WRONLY, 0)
            try:
                os.ftruncate(fd, args[1])
            finally:
                os.close(fd)
            return recs
        # every string is copied before anything is decided
        copies = []
        for dirfd_arg, path_arg, op, _ in spec.slots:
            raw = paths.read(pid, args[path_arg])
            copies.append((op, paths.absolute(pid, None if dirfd_arg is None
                                              else args[dirfd_arg], raw)))
        link_text = paths.read(pid, args[0]) if name.startswith("symlink") else ""
        umask = self._umask(pid) if name.startswith(("mkdir", "mknod")) else None
        held: list[int] = []
        recs: list[Record] = []
        try:
            finals = []
            for i, (op, path) in enumerate(copies):
                follow_last = bool(i == 0 and name == "linkat" and flags & S.AT_SYMLINK_FOLLOW)
                loc = self._locate_final(path, op, follow_last, held)
                bad = bad_final(name, i, loc, flags, path)
                if bad:
                    raise self._note(_err(bad, path), op, path)
                target = join(loc.dir, loc.name)   # type: ignore[arg-type]
                v = self.loop.engine.decide(op, target)
                if not v.allowed:
                    raise Denied(refusal(loc.fd, loc.name, op), op, target, v.rule)  # type: ignore[arg-type]
                recs.append((op, target, True, v.rule))
                finals.append(loc)
            self._memo.clear()     # a name is about to change: forget the walks
            self._do(name, flags, args, [f.fd for f in finals], [f.name for f in finals],
                     umask, link_text)
            paths.invalidate()
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
                loc = locate(self.loop.paths.root_fd, path, links, self._memo)
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

    def _do(self, name: str, flags: int, args: Any, fds: list[int], names: list[Any],
            umask: int | None, link_text: str) -> None:
        """The call itself, relative to the held directories, on the decided names."""
        if name in ("unlink", "rmdir", "unlinkat"):
            if name == "rmdir" or (name == "unlinkat" and flags & S.AT_REMOVEDIR):
                os.rmdir(names[0], dir_fd=fds[0])
            else:
                os.unlink(names[0], dir_fd=fds[0])
        elif name in ("mkdir", "mkdirat", "mknod", "mknodat"):
            i = 1 if name in ("mkdir", "mknod") else 2
            old = os.umask(umask or 0)
            try:
                if name.startswith("mkdir"):
                    os.mkdir(names[0], args[i] & 0o7777, dir_fd=fds[0])
                else:
                    os.mknod(names[0], args[i] & 0xFFFFFFFF, args[i + 1], dir_fd=fds[0])
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
            os.symlink(link_text, names[0], dir_fd=fds[0])
        else:
            raise OSError(errno.ENOSYS, name)


__all__ = ["Broker", "BROKERED", "openat2", "AT_FDCWD"]
