"""Calls the kernel layers cannot decide are performed for the sandbox, by a process
that holds no more privilege than the sandbox.

Used only when the policy has *guarded* trees (deny rules whose paths the
mount view could not hide because they did not exist yet, inside a writable
tree, e.g. ``deny = ["${OUTPUT}/*.pem"]``). Answering CONTINUE there would be
unsafe: the path the monitor read can be swapped by another thread before the
kernel reads it, and no kernel layer would stop the swapped one. And since
*any* open could be swapped into a guarded tree, every open and every
name-changing call (creat, mkdir, mknod, unlink, rmdir, rename, link, symlink,
truncate) is brokered, whatever path was read:

1. here, in the monitor, the path is copied once out of the sandbox's memory
   and made absolute (cwd or dirfd); from then on only our copy is used (the
   race is gone: what is decided is what is done);
2. the copy goes to the broker process (sandbox/monitor/broker_process.py):
   the sandbox's credentials, namespaces, root and Landlock domain, no
   capabilities, no_new_privs. It resolves the path with the kernel, decides
   on the real path reached, and acts relative to held descriptors
   (sandbox/monitor/broker_exec.py);
3. an opened descriptor comes back over SCM_RIGHTS and is installed in the
   caller (SECCOMP_IOCTL_NOTIF_ADDFD with ADDFD_FLAG_SEND: the syscall
   returns its number); other calls return 0 or the errno the broker got.

The monitor never waits for the broker inline: `handle` and `handle_net` are
generators that yield the broker's socket, and the process's notification hub
(notify_hub.py) resumes them when the reply is readable, watching every other
run meanwhile. A broker blocked in an open of a FIFO or a connect to a full
UNIX socket stalls its own run only (as the kernel would have), and the end of
the run ends that call (`interrupt`: answered EPERM, recorded).

The monitor itself never opens, creates or changes anything for the child
(issue 10, finding 2: a root monitor acting for the child read /proc/kmsg
and made device nodes). When the broker cannot start or dies, every brokered
call fails closed with EPERM and the failure is counted in the summary.

Not brokered (recorded and answered as usual): stat/access/readlink (metadata
of a denied name may be seen), chmod/chown/utime (metadata changes), exec
(a write tree is not executable unless the policy says so; see docs/audit.md).
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import struct
from typing import Any, Generator

from sandbox.isolation import libc
from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.audit_paths import AT_FDCWD
from sandbox.monitor.broker_exec import Record, Request
from sandbox.monitor.broker_net import MAX_SEND, NO_NETWORK_RULE, NetRequest, encode_addr
from sandbox.monitor.broker_process import BrokerGone, BrokerProcess
from sandbox.monitor.seccomp_notify import SECCOMP_ADDFD_FLAG_SEND
from sandbox.netproxy.inside import PROXY_PORT

BROKERED = frozenset({"open", "openat", "openat2", "creat", "truncate", "unlink", "unlinkat",
                      "rmdir", "mkdir", "mkdirat", "mknod", "mknodat", "rename", "renameat",
                      "renameat2", "link", "linkat", "symlink", "symlinkat"})
_MODE_ARG = {"mkdir": 1, "mkdirat": 2, "mknod": 1, "mknodat": 2}
_MSGHDR = struct.Struct("<QI4xQQQQi4x")      # struct msghdr (x86_64, 56 bytes)
take_fd = libc.pidfd_getfd     # a duplicate of descriptor `fd` of thread `tid`


class Broker:
    def __init__(self, loop: Any, guarded: tuple[str, ...]) -> None:
        self.loop = loop
        self.guarded = guarded
        ctx = getattr(getattr(loop, "sup", None), "ctx", None)
        mode = ctx.policy.network.mode if ctx is not None else ""
        self.proxy_only = mode == "allowlist"
        self.no_network = mode == "none"
        self._nspid: dict[int, tuple[int, int]] = {}
        self.process: BrokerProcess | None = None
        self.failed: str | None = None
        self.pid: int | None = None          # the broker process's, once started

    def handles(self, name: str) -> bool:
        return bool(self.guarded) and name in BROKERED

    # -- what the monitor reads about the caller ---------------------------------------------
    @staticmethod
    def _status(pid: int) -> dict[str, str]:
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
            try:
                st = self._status(pid)
                hit = (int(st["NStgid"].split()[-1]), int(st["NSpid"].split()[-1]))
            except (OSError, KeyError, ValueError):
                return (0, 0)
            if len(self._nspid) >= 4096:
                self._nspid.clear()
            self._nspid[pid] = hit
        return hit

    def request(self, n: Any, name: str, spec: S.Spec, flags: int) -> Request:
        """Our copy of the call's arguments (the paths are read once, here)."""
        pid, args = n.pid, n.args
        paths = self.loop.paths
        copies = []
        for dirfd_arg, path_arg, _, _ in spec.slots:
            raw = paths.read(pid, args[path_arg])
            copies.append(paths.absolute(pid, None if dirfd_arg is None else args[dirfd_arg], raw))
        tgid, tid = self._ns_ids(pid)
        mode, umask, length, dev, text = 0, None, 0, 0, ""
        if spec.kind == "creat":
            mode = args[1] & 0o7777
        elif spec.kind == "openat2":
            mode = self._openat2_mode(pid, args[2], args[3]) & 0o7777
        elif spec.kind == "open":
            mode = args[spec.flags_arg + 1] & 0o7777    # type: ignore[operator]
        if spec.kind in ("open", "openat2", "creat"):
            if flags & (S.O_CREAT | S.O_TMPFILE):
                umask = self._umask(pid)
        elif name in _MODE_ARG:
            mode = args[_MODE_ARG[name]] & 0xFFFFFFFF
            dev = args[_MODE_ARG[name] + 1] if name.startswith("mknod") else 0
            umask = self._umask(pid)
        elif name == "truncate":
            length = args[1]
        elif name.startswith("symlink"):
            text = paths.read(pid, args[0])
        return Request(name, spec.kind, flags, mode, tuple(copies), text, umask, tgid, tid,
                       length, dev)

    def _openat2_mode(self, pid: int, how: int, size: int) -> int:
        if not how or size < 16:
            return 0
        data = self.loop.paths.mem.read(pid, how + 8, 8)
        return int.from_bytes(data, "little") if len(data) == 8 else 0

    # -- the broker process ------------------------------------------------------------------
    def _process(self, n: Any) -> BrokerProcess:
        if self.process is None:
            if self.failed:
                raise BrokerGone(self.failed)
            proc = BrokerProcess(self.loop.engine, getattr(self.loop, "ctx", None))
            try:
                proc.start(n.pid, lambda: self.loop.listener.id_valid(n.id))
            except BrokerGone as exc:
                self.failed = str(exc)
                self.loop.tally.error(f"broker: {exc}")
                raise
            self.process, self.pid = proc, proc.pid
        return self.process

    def busy(self) -> bool:
        """Is a call waiting for the broker's reply (the hub holds the run meanwhile)?"""
        return self.process is not None and self.process.busy

    def interrupt(self) -> None:
        """The run is over: end the call in flight (answered EPERM, recorded)."""
        if self.process is not None:
            self.process.interrupt()

    def stop(self) -> Any:
        """End the broker process; its rusage (None when none ran)."""
        if self.process is None:
            return None
        self.process.stop()
        return self.process.rusage

    # -- entry point -------------------------------------------------------------------------
    def handle(self, n: Any, name: str, spec: S.Spec, flags: int
               ) -> Generator[int, None, bool]:
        """Perform the call by the broker; a generator that yields the broker's socket
        while the reply is awaited (the notification hub resumes it), returns whether
        the call was answered."""
        loop = self.loop
        if loop.paths.root_fd is None:
            return False        # cannot broker without the root: the layers decide
        pid, args = n.pid, n.args
        lst = loop.listener
        records: list[Record] = []
        result = "ok"
        try:
            req = self.request(n, name, spec, flags)
            if not lst.id_valid(n.id):
                # The caller is gone (killed while waiting): its thread id may already
                # name another task, whose memory we may have read. Act for no one.
                loop.tally.vanished += 1
                return True
            reply = yield from self._process(n).calling(req)
            records = reply.records
            if reply.err:
                result = errno.errorcode.get(reply.err, str(reply.err))
                if reply.rule_denied:
                    loop.tally.monitor_denied += 1
                self._answer_error(n.id, reply.err)
            elif reply.fd is not None:
                try:
                    lst.addfd(n.id, reply.fd, SECCOMP_ADDFD_FLAG_SEND,
                              newfd_flags=os.O_CLOEXEC if flags & S.O_CLOEXEC else 0)
                finally:
                    os.close(reply.fd)
            else:
                lst.respond_value(n.id, 0)
        except BrokerGone:
            result = "EPERM"          # fail closed: nothing is done without the broker
            self._answer_error(n.id, errno.EPERM)
        except OSError as exc:       # reading the caller, or installing the descriptor
            result = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self._answer_error(n.id, exc.errno or errno.EIO)
        if not records:
            records.append(self._fallback_record(pid, args, spec, flags))
        loop.tally.brokered += 1
        flag_text = loop._flag_text(name, spec.kind, flags, pid, args)
        for op, path, allowed, rule in records:
            loop.record(pid, op, name, path, flag_text, allowed, rule, "monitor", result)
        return True

    # -- connects and addressed sends (issue 10.6) -------------------------------------------
    def handle_net(self, n: Any, name: str) -> Generator[int, None, None]:
        """connect / sendto / sendmsg / sendmmsg under a private network. Only AF_UNIX
        sockets can leave the network namespace (a pathname), and only connect and
        datagram sends take a peer's name: those are performed by the broker on our
        copy. An AF_INET/AF_INET6 connect is answered here, never allowed: with mode
        "none" ENETUNREACH, with "allowlist" EACCES unless it is the proxy's port. A bind
        (notified under "none" only) is `_bind`'s.
        Anything else is CONTINUEd (its family is the socket's, fixed, and the
        namespace bounds it), see broker_net.py."""
        loop, lst = self.loop, self.loop.listener
        pid, args = n.pid, n.args
        try:
            sock = take_fd(pid, args[0] & 0xFFFFFFFF)
        except OSError as exc:     # EBADF: what the kernel would say; the caller's fd
            lst.respond_error(n.id, exc.errno if exc.errno == errno.EBADF else errno.EPERM)
            return
        rights: list[int] = []
        try:
            if not stat.S_ISSOCK(os.fstat(sock).st_mode):
                lst.respond_error(n.id, errno.ENOTSOCK)
                return
            with socket.socket(fileno=os.dup(sock)) as s:
                family = s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
                stype = s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
            if name == "bind":
                self._bind(n, family, stype)
                return
            inet = None     # an IPv4/IPv6 connect answered here (either mode), never allowed
            if name == "connect" and family in (socket.AF_INET, socket.AF_INET6) and (
                    self.no_network or (self.proxy_only and stype == socket.SOCK_STREAM)):
                inet = self._inet_target(n)
            if inet is not None and self.no_network:
                # mode "none": what the kernel would say in a network namespace whose
                # only interface is down, before Landlock's EACCES (which stays the
                # backstop). EACCES reads as a refusal worth retrying: wget tried
                # 20 times, for minutes; no client retries "network is unreachable"
                self._net_answer(n, name, errno.ENETUNREACH, [(
                    "connect", _target_text(*inet), False, NO_NETWORK_RULE)])
                return
            if inet is not None and inet[1] != PROXY_PORT:
                # mode "allowlist": Landlock refuses every TCP connect but the proxy's
                # port; answered (never allowed) here so that it is recorded, with the
                # same EACCES, on every Landlock ABI
                self._net_answer(n, name, errno.EACCES, [(
                    "connect", _target_text(*inet), False,
                    "network.allowlist: a direct connection (only the proxy at "
                    f"127.0.0.1:{PROXY_PORT} is reachable: HTTP_PROXY, ALL_PROXY)")])
                return
            if family != socket.AF_UNIX or (name != "connect" and stype != socket.SOCK_DGRAM):
                lst.respond_continue(n.id)
                return
            if name == "sendmmsg":
                # several datagrams, each with its own address: not brokered, refused
                self._net_answer(n, name, errno.EOPNOTSUPP, [("send", "?", False,
                                 "sandbox: sendmmsg on a UNIX datagram socket")])
                return
            req = self._net_request(n, name, rights)
            if isinstance(req, int):
                lst.respond_error(n.id, req)
                return
            try:
                reply = yield from self._process(n).calling(req, (sock, *rights))
            except BrokerGone:
                self._net_answer(n, name, errno.EPERM, [])
                return
            if reply.err:
                if reply.rule_denied:
                    loop.tally.monitor_denied += 1
                self._net_answer(n, name, reply.err, reply.records)
            else:
                lst.respond_value(n.id, reply.value)
                self._net_record(n, name, reply.records, "ok")
        finally:
            os.close(sock)
            for fd in rights:
                os.close(fd)

    def _bind(self, n: Any, family: int, stype: int) -> None:
        """bind under mode "none" (notified with an INET address length only): an IPv4 or
        IPv6 TCP bind is refused here with EACCES, what Landlock says to it (and still
        says to one the filter let through), and recorded, so that the run can say why a
        server could not listen. The address is never checked, only the socket's family
        and type (fixed): anything else is the kernel's (a UDP or UNIX bind works)."""
        if family in (socket.AF_INET, socket.AF_INET6) and stype == socket.SOCK_STREAM:
            inet = self._inet_target(n)
            self._net_answer(n, "bind", errno.EACCES, [(
                "bind", _target_text(*inet) if inet else "?", False, NO_NETWORK_RULE)])
            return
        self.loop.listener.respond_continue(n.id)

    def _inet_target(self, n: Any) -> tuple[str, int] | None:
        """(address, port) of a connect's AF_INET/AF_INET6 sockaddr, read from the caller's
        memory: advisory (a record), used only to refuse."""
        raw = self.loop.paths.mem.read(n.pid, n.args[1], min(n.args[2] & 0xFFFFFFFF, 28))
        if len(raw) >= 8 and int.from_bytes(raw[:2], "little") == socket.AF_INET:
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
        if len(raw) >= 24 and int.from_bytes(raw[:2], "little") == socket.AF_INET6:
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
        return None

    def _net_answer(self, n: Any, name: str, err: int, records: list[Record]) -> None:
        self._answer_error(n.id, err)
        self._net_record(n, name, records, errno.errorcode.get(err, str(err)))

    def _net_record(self, n: Any, name: str, records: list[Record], result: str) -> None:
        self.loop.tally.brokered += 1
        for op, path, allowed, rule in records:
            self.loop.record(n.pid, op, name, path, None, allowed, rule, "monitor", result)

    def _net_request(self, n: Any, name: str, rights: list[int]) -> NetRequest | int:
        """Our copy of the address (sun_path made absolute) and data; or an errno."""
        pid, args = n.pid, n.args
        mem = self.loop.paths.mem
        data, flags = b"", 0
        if name == "connect":
            addr_ptr, addr_len = args[1], args[2] & 0xFFFFFFFF
        elif name == "sendto":
            addr_ptr, addr_len, flags = args[4], args[5] & 0xFFFFFFFF, args[3] & 0xFFFFFFFF
            if args[2] > MAX_SEND:
                return errno.EMSGSIZE
            data = mem.read(pid, args[1], args[2]) if args[2] else b""
        else:   # sendmsg
            flags = args[2] & 0xFFFFFFFF
            raw = mem.read(pid, args[1], _MSGHDR.size)
            if len(raw) < _MSGHDR.size:
                return errno.EFAULT
            addr_ptr, addr_len, iov, iovlen, ctl, ctllen, _ = _MSGHDR.unpack(raw)
            if iovlen > 1024:
                return errno.EMSGSIZE
            vec = mem.read(pid, iov, 16 * iovlen) if iovlen else b""
            parts: list[bytes] = []
            for i in range(iovlen):
                base, length = struct.unpack_from("<QQ", vec, 16 * i)
                if sum(map(len, parts)) + length > MAX_SEND:
                    return errno.EMSGSIZE
                parts.append(mem.read(pid, base, length) if length else b"")
            data = b"".join(parts)
            if ctl and ctllen:
                if ctllen > 4096:
                    return errno.EINVAL
                err = self._rights(pid, mem.read(pid, ctl, ctllen), rights)
                if err:
                    return err
        if not addr_ptr or not addr_len:
            addr = b""
        else:
            if addr_len > 110:
                return errno.EINVAL
            addr = mem.read(pid, addr_ptr, addr_len)
            if len(addr) > 2 and addr[2] != 0 and int.from_bytes(addr[:2], "little") \
                    == socket.AF_UNIX:
                path = os.fsdecode(addr[2:].split(b"\0", 1)[0])
                path = self.loop.paths.absolute(pid, None, path)
                addr = addr[:2] + os.fsencode(path)
        return NetRequest(name, flags, encode_addr(addr), encode_addr(data))

    @staticmethod
    def _rights(pid: int, ctl: bytes, rights: list[int]) -> int:
        """SCM_RIGHTS descriptors of a sendmsg, taken from the caller; other control
        messages are refused (EPERM): the broker could not send them as the caller."""
        pos = 0
        while pos + 16 <= len(ctl):
            length, level, kind = struct.unpack_from("<Qii", ctl, pos)
            if length < 16 or pos + length > len(ctl):
                return errno.EINVAL
            if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
                return errno.EPERM
            for (fd,) in struct.iter_unpack("<i", ctl[pos + 16:pos + length - (length - 16) % 4]):
                if len(rights) >= 60:
                    return errno.ETOOMANYREFS
                try:
                    rights.append(take_fd(pid, fd))
                except OSError:
                    return errno.EBADF
            pos += (length + 7) & ~7
        return 0

    def _answer_error(self, nid: int, err: int) -> None:
        try:
            self.loop.listener.respond_error(nid, err)
        except OSError:
            pass

    def _fallback_record(self, pid: int, args: Any, spec: S.Spec, flags: int) -> Record:
        """The record of a call that failed before the broker said what it was about."""
        dirfd_arg, path_arg, op, _ = spec.slots[0]
        try:
            raw = self.loop.paths.read(pid, args[path_arg])
            path = self.loop.paths.absolute(pid, None if dirfd_arg is None else args[dirfd_arg], raw)
        except Exception:
            path = "?"
        op = op or S.open_operation(flags)
        v = self.loop.engine.decide(op, os.path.normpath(path)) if path.startswith("/") else None
        return (op, path, bool(v and v.allowed), v.rule if v else "default: not an absolute path")


__all__ = ["Broker", "BROKERED", "AT_FDCWD"]


def _target_text(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
