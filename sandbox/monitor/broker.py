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
2. the parent directory is resolved to a canonical path inside the sandbox's
   root and opened with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS) from
   ``/proc/<pid>/root``, so the descriptor is exactly that directory;
3. the engine decides on parent + final name; denied -> EACCES;
4. the call is made relative to that descriptor, never following a link in
   the final name (a link is read and resolved again, at most 40 hops);
5. an opened descriptor is installed in the caller (SECCOMP_IOCTL_NOTIF_ADDFD
   with ADDFD_FLAG_SEND: the syscall returns its number); other calls return
   0 or the errno the monitor got.

Going through the sandbox's root, the call sees the sandbox's mount view
(read-only binds stay read-only, masks stay masks); Landlock does not apply to
the monitor, which is why step 3 decides everything the Landlock domain would.
Files are created with the caller's umask, owned by the monitor's uid (the
uid the sandbox's is mapped to).

Not brokered (recorded and answered as usual): stat/access/readlink (metadata
of a denied name may be seen), chmod/chown/utime (metadata changes), exec
(a write tree is not executable unless the policy says so; see docs/audit.md).
"""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.audit_paths import AT_FDCWD
from sandbox.monitor.seccomp_notify import SECCOMP_ADDFD_FLAG_SEND

SYS_openat2, SYS_renameat2 = 437, 316
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT = 0x02, 0x04, 0x10
_MAX_HOPS = 40
BROKERED = frozenset({"open", "openat", "openat2", "creat", "truncate", "unlink", "unlinkat",
                      "rmdir", "mkdir", "mkdirat", "mknod", "mknodat", "rename", "renameat",
                      "renameat2", "link", "linkat", "symlink", "symlinkat"})
_MAGIC = frozenset({"cwd", "root", "exe", "fd", "map_files"})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    how = _OpenHow(flags, mode, resolve)
    ret = _libc.syscall(ctypes.c_long(SYS_openat2), ctypes.c_int(dirfd),
                        ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                        ctypes.c_size_t(ctypes.sizeof(how)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return ret


def renameat2(sfd: int, src: str, dfd: int, dst: str, flags: int) -> None:
    ret = _libc.syscall(ctypes.c_long(SYS_renameat2), ctypes.c_int(sfd),
                        ctypes.c_char_p(os.fsencode(src)), ctypes.c_int(dfd),
                        ctypes.c_char_p(os.fsencode(dst)), ctypes.c_uint(flags))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), src)


class Denied(Exception):
    def __init__(self, err: int, op: str, path: str, rule: str) -> None:
        super().__init__(err)
        self.err, self.op, self.path, self.rule = err, op, path, rule


class Broker:
    def __init__(self, loop: Any, guarded: tuple[str, ...]) -> None:
        self.loop = loop
        self.guarded = guarded
        self._nspid: dict[int, tuple[int, int]] = {}

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

    def _parent(self, parent: str) -> tuple[int, str]:
        """(O_PATH descriptor of `parent` inside the sandbox's root, its canonical path)."""
        paths = self.loop.paths
        for attempt in (0, 1):
            cparent = paths.canonical(parent, True)
            try:
                fd = openat2(paths.root_fd, cparent.lstrip("/") or ".",
                             os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                             RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
                return fd, cparent
            except OSError as exc:
                if exc.errno != errno.ELOOP or attempt:
                    raise
                paths.invalidate()   # a link appeared where the cache had none
        raise AssertionError("unreachable")

    def _split(self, pid: int, dirfd: int | None, raw: str) -> tuple[str, str]:
        path = self.loop.paths.absolute(pid, dirfd, raw).rstrip("/") or "/"
        parent, _, last = path.rpartition("/")
        return parent or "/", last

    def _decide(self, op: str, path: str) -> Any:
        v = self.loop.engine.decide(op, path)
        if not v.allowed:
            raise Denied(errno.EACCES, op, path, v.rule)
        return v

    # -- entry point -------------------------------------------------------------------------
    def handle(self, n: Any, name: str, spec: S.Spec, flags: int) -> bool:
        loop = self.loop
        if loop.paths.root_fd is None:
            return False        # cannot broker without the root: the layers decide
        pid, args = n.pid, n.args
        lst = loop.listener
        records: list[tuple[str, str, bool, str]] = []
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
            records.append((d.op, d.path, False, d.rule or "sandbox: through a magic link"))
            result = errno.errorcode.get(d.err, str(d.err))
            if d.rule:
                loop.tally.monitor_denied += 1
            self._answer_error(n.id, d.err)
        except OSError as exc:
            result = errno.errorcode.get(exc.errno or 0, str(exc.errno))
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

    def _fallback_record(self, pid: int, args: Any, spec: S.Spec, flags: int
                         ) -> tuple[str, str, bool, str]:
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
    def _open(self, n: Any, name: str, spec: S.Spec, flags: int
              ) -> tuple[int, list[tuple[str, str, bool, str]]]:
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
        norm = os.path.normpath(path)
        if norm.startswith(("/proc/", "/dev/")) or norm in ("/proc", "/dev"):
            return self._open_special(pid, norm, op, flags, mode)
        umask = self._umask(pid) if flags & (S.O_CREAT | S.O_TMPFILE) else 0
        sysflags = flags | S.O_CLOEXEC
        for _ in range(_MAX_HOPS):
            parent, _, last = path.rstrip("/").rpartition("/") if path.rstrip("/") else ("", "", "")
            if last in ("", ".", ".."):
                target = paths.canonical(path, True)
                v = self._decide(op, target)
                fd = openat2(paths.root_fd, target.lstrip("/") or ".", sysflags, mode,
                             RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
                return fd, [(op, target, True, v.rule)]
            pfd, cparent = self._parent(parent or "/")
            try:
                target = cparent.rstrip("/") + "/" + last
                v = self._decide(op, target)
                old = os.umask(umask) if umask else None
                try:
                    fd = os.open(last, sysflags | S.O_NOFOLLOW, mode, dir_fd=pfd)
                    return fd, [(op, target, True, v.rule)]
                except OSError as exc:
                    if exc.errno != errno.ELOOP or flags & S.O_NOFOLLOW:
                        raise
                    link = os.readlink(last, dir_fd=pfd)
                finally:
                    if old is not None:
                        os.umask(old)
            finally:
                os.close(pfd)
            path = link if link.startswith("/") else cparent.rstrip("/") + "/" + link
        raise OSError(errno.ELOOP, "too many levels of symbolic links")

    def _openat2_mode(self, pid: int, how: int, size: int) -> int:
        if not how or size < 16:
            return 0
        data = os.pread(self.loop.paths._mem_fd(pid), 8, how + 8)
        return int.from_bytes(data, "little") if len(data) == 8 else 0

    def _open_special(self, pid: int, path: str, op: str, flags: int, mode: int
                      ) -> tuple[int, list[tuple[str, str, bool, str]]]:
        """/proc and /dev: the sandbox's own; `self` is rewritten to the caller's pid
        (in the sandbox's PID namespace); nothing may follow a magic link."""
        v = self._decide(op, path)
        tgid, tid = self._ns_ids(pid)
        rel = path[1:]
        for old, new in (("dev/stdin", f"proc/{tgid}/fd/0"), ("dev/stdout", f"proc/{tgid}/fd/1"),
                         ("dev/stderr", f"proc/{tgid}/fd/2"), ("dev/fd", f"proc/{tgid}/fd"),
                         ("proc/thread-self", f"proc/{tgid}/task/{tid}"),
                         ("proc/self", f"proc/{tgid}")):
            if rel == old or rel.startswith(old + "/"):
                rel = new + rel[len(old):]
                break
        parts = rel.split("/")
        for i, part in enumerate(parts[:-1]):
            nxt = i + 2 if part in ("fd", "map_files") else i + 1
            if part in _MAGIC and i >= 2 and nxt < len(parts):
                raise Denied(errno.EACCES, op, path, "")   # a path through a magic link
        if parts[0] == "proc" and len(parts) > 1:
            pfd = openat2(self.loop.paths.root_fd, "proc", os.O_PATH | os.O_DIRECTORY
                          | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)
            try:
                return os.open("/".join(parts[1:]), flags | S.O_CLOEXEC, mode, dir_fd=pfd), \
                    [(op, path, True, v.rule)]
            finally:
                os.close(pfd)
        return openat2(self.loop.paths.root_fd, rel, flags | S.O_CLOEXEC, mode,
                       RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), [(op, path, True, v.rule)]

    # -- the other name-changing calls -------------------------------------------------------
    def _other(self, n: Any, name: str, spec: S.Spec, flags: int
               ) -> list[tuple[str, str, bool, str]]:
        pid, args = n.pid, n.args
        paths = self.loop.paths
        if name == "truncate":
            fd, recs = self._open_path(pid, args[0], os.O_WRONLY)
            try:
                os.ftruncate(fd, args[1])
            finally:
                os.close(fd)
            return recs
        slots = []
        for dirfd_arg, path_arg, op, _ in spec.slots:
            raw = paths.read(pid, args[path_arg])
            parent, last = self._split(pid, None if dirfd_arg is None else args[dirfd_arg], raw)
            if last in ("", ".", ".."):
                raise OSError(errno.EINVAL if name.startswith("rename") else errno.EBUSY,
                              "bad final component")
            slots.append((op, parent, last))
        opened: list[int] = []
        recs = []
        try:
            for op, parent, last in slots:
                pfd, cparent = self._parent(parent)
                opened.append(pfd)
                target = cparent.rstrip("/") + "/" + last
                recs.append((op, target, True, self._decide(op, target).rule))
            fds = opened
            lasts = [s[2] for s in slots]
            if name in ("unlink", "rmdir", "unlinkat"):
                if name == "rmdir" or (name == "unlinkat" and flags & S.AT_REMOVEDIR):
                    os.rmdir(lasts[0], dir_fd=fds[0])
                else:
                    os.unlink(lasts[0], dir_fd=fds[0])
            elif name in ("mkdir", "mkdirat", "mknod", "mknodat"):
                i = 1 if name in ("mkdir", "mknod") else 2
                old = os.umask(self._umask(pid))
                try:
                    if name.startswith("mkdir"):
                        os.mkdir(lasts[0], args[i] & 0o7777, dir_fd=fds[0])
                    else:
                        os.mknod(lasts[0], args[i] & 0xFFFFFFFF, args[i + 1], dir_fd=fds[0])
                finally:
                    os.umask(old)
            elif name.startswith("rename"):
                if name == "renameat2" and flags:
                    renameat2(fds[0], lasts[0], fds[1], lasts[1], flags)
                else:
                    os.rename(lasts[0], lasts[1], src_dir_fd=fds[0], dst_dir_fd=fds[1])
            elif name.startswith("link"):
                follow = bool(name == "linkat" and flags & S.AT_SYMLINK_FOLLOW)
                if follow and _is_link(lasts[0], fds[0]):
                    raise OSError(errno.EACCES, "linkat with AT_SYMLINK_FOLLOW of a link")
                os.link(lasts[0], lasts[1], src_dir_fd=fds[0], dst_dir_fd=fds[1],
                        follow_symlinks=False)
            elif name.startswith("symlink"):
                target_text = paths.read(pid, args[0])
                os.symlink(target_text, lasts[0], dir_fd=fds[0])
            else:
                raise OSError(errno.ENOSYS, name)
            paths.invalidate()
            return recs
        except Denied as d:
            # keep the records of slots already decided (e.g. rename's source)
            d.previous = recs   # type: ignore[attr-defined]
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def _open_path(self, pid: int, addr: int, flags: int
                   ) -> tuple[int, list[tuple[str, str, bool, str]]]:
        class _N:  # a notification-shaped view for _open
            pass
        n = _N()
        n.pid, n.args = pid, (addr, flags, 0, 0, 0, 0)   # type: ignore[attr-defined]
        spec = S.Spec(((None, 0, "write", True),), 1, "open")
        fd, recs = self._open(n, "open", spec, flags)
        return fd, [("write", recs[0][1], True, recs[0][3])]


def _is_link(name: str, dirfd: int) -> bool:
    try:
        os.readlink(name, dir_fd=dirfd)
        return True
    except OSError:
        return False


__all__ = ["Broker", "BROKERED", "openat2", "AT_FDCWD"]
