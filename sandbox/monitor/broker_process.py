"""The broker process: whatever is done on the sandbox's behalf is done with no more
privilege than the sandbox has.

The monitor keeps its privileges (it must read the sandbox's memory, kill it,
write the audit store) and never acts for the child. When a call must be
*performed* rather than answered (sandbox/monitor/broker.py: guarded trees,
mediated connects), the monitor sends its own copy of the arguments to this
process, which:

- is forked by the monitor host (so it is outside the sandbox's PID namespace:
  the sandbox can neither see, signal nor ptrace it) and dies with it
  (PDEATHSIG, and the end of its socket). The host has threads, and a fork
  copies only the forking one: the child runs code that takes no lock
  (tests/test_broker_fork_safety.py keeps what it can reach free of
  threading, logging and queues), never a lock another thread held;
- joins the sandbox's user, mount and network namespaces (``setns`` on
  descriptors of ``/proc/<pid>/ns/*`` of a sandbox task, checked still
  pending, opened before the fork), and its root (``chroot`` into
  ``/proc/<pid>/root``): it sees exactly the sandbox's view;
- empties every capability set (bounding, ambient, inheritable, permitted,
  effective; SECBIT_NOROOT locked), sets no_new_privs, and applies the same
  Landlock ruleset the sandbox got from the plan: its credentials are the
  sandbox's (the same uid and gid, mapped the same way), so the kernel
  checks everything it does as it would for the sandbox;
- keeps one descriptor from the host: its own ``/proc/<pid>/fd`` directory,
  opened before it left, to read back what a descriptor names (the
  sandbox's ``/proc`` does not know the broker);
- serves requests one at a time over a SOCK_SEQPACKET socketpair: a JSON
  `Request` (bounded, `MAX_FRAME`), and for a connect the socket the
  monitor took from the caller (SCM_RIGHTS); the reply is JSON (errno,
  records) plus the opened descriptor, which the monitor installs in the
  caller with SECCOMP_IOCTL_NOTIF_ADDFD.

The monitor trusts the broker's answer no more than it must: the reply is
decoded with bounds and type checks, and a broker that dies or misbehaves
fails every later call closed (EPERM), never open.
"""
from __future__ import annotations

import copy
import errno
import json
import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Generator

import prctl

from sandbox.isolation import landlock, libc, privileges
from sandbox.monitor.broker_exec import MAGIC_RULE, Denied, Executor, Record, Request
from sandbox.monitor.broker_net import NetRequest
from sandbox.monitor.root_walk import Root

MAX_FRAME = 128 * 1024
MAX_FDS = 64             # the caller's socket and the descriptors a brokered sendmsg passes
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
_NS = (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("net", CLONE_NEWNET))



class BrokerGone(Exception):
    """The broker process is not there (could not start, died, or answered nonsense)."""


@dataclass
class Reply:
    err: int = 0                       # 0: done; else the errno the caller gets
    records: list[Record] = field(default_factory=list)
    rule_denied: bool = False          # refused by a policy rule (counted as monitor_denied)
    fd: int | None = None              # the opened descriptor (ours to close)
    value: int = 0                     # what the call returns (bytes sent)


_setns = libc.setns


# -- the monitor's handle -------------------------------------------------------------------

class BrokerProcess:
    def __init__(self, engine: Any, ctx: Any) -> None:
        self.engine, self.ctx = engine, ctx
        self.pid: int | None = None
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.rusage: Any = None
        self.busy = False          # a request sent, its reply not yet read

    def start(self, pid: int, still_pending: Any) -> None:
        """Fork the broker into the namespaces of sandbox task `pid`; `still_pending()`
        is checked after the descriptors are open (the pid was not recycled)."""
        fds: list[tuple[int, int]] = []
        try:
            for name, flag in _NS:
                fds.append((os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag))
            root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            for fd, _ in fds:
                os.close(fd)
            self.error = f"cannot reach the sandbox's namespaces: {exc.strerror}"
            raise BrokerGone(self.error) from None
        try:
            if not still_pending():
                raise BrokerGone("the sandbox task went away")
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ready_r, ready_w = os.pipe()
            child = os.fork()
            if child == 0:          # pragma: no cover - runs in the child
                code = 1
                try:
                    ours.close()
                    os.close(ready_r)
                    ex = _confine(fds, root, theirs.fileno(), ready_w, self.engine, self.ctx)
                    _serve(theirs, ex)
                    code = 0
                finally:
                    os._exit(code)
            theirs.close()
            os.close(ready_w)
            self.pid, self.sock = child, ours
            status = _read_all(ready_r)
            os.close(ready_r)
            if status != b"ok":
                self.error = status.decode("utf-8", "replace") or "the broker died starting"
                self.stop()
                raise BrokerGone(self.error)
        finally:
            for fd, _ in fds:
                os.close(fd)
            os.close(root)

    def calling(self, req: Any, fds: tuple[int, ...] = ()) -> Generator[int, None, Reply]:
        """Send `req`; yield the socket to wait on (the notification hub waits for it
        with every other run's listener: a broker stuck in a FIFO's open holds its own
        run only); then the reply. One request at a time per broker. On failure the
        broker is killed (`abort`), not waited for: that is `stop`'s, at the run's end."""
        if self.sock is None:
            raise BrokerGone(self.error or "no broker")
        data = json.dumps(asdict(req), ensure_ascii=True).encode()
        try:
            socket.send_fds(self.sock, [data], list(fds))
        except OSError as exc:
            raise self.abort(f"broker: {exc.strerror}") from None
        self.busy = True
        try:
            yield self.sock.fileno()
        finally:
            self.busy = False
        if self.sock is None:
            raise BrokerGone(self.error or "the broker was stopped")
        try:
            msg, got, _, _ = socket.recv_fds(self.sock, MAX_FRAME, 1)
        except OSError as exc:
            raise self.abort(f"broker: {exc.strerror}") from None
        try:
            return _decode_reply(msg, got)
        except (ValueError, TypeError, KeyError) as exc:
            for fd in got:
                os.close(fd)
            raise self.abort(f"broker: bad reply ({exc})" if msg else "broker: gone") from None

    def interrupt(self) -> None:
        """End the call in flight, from another thread (the run is over): the waiting
        side then reads the end of the stream and fails the call (EPERM), recorded."""
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            if self.error is None:
                self.error = "the run ended during the call"

    def abort(self, why: str) -> BrokerGone:
        """The broker failed: kill it now (reaped by `stop`); the exception to raise."""
        if self.error is None:
            self.error = why
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)   # our unreaped child: the pid is ours
            except ProcessLookupError:
                pass
        return BrokerGone(self.error)

    def stop(self) -> None:
        """End the broker and reap it (its CPU and memory belong to the run)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is not None:
            pid, self.pid = self.pid, None
            for _ in range(200):
                done, _, ru = os.wait4(pid, os.WNOHANG)
                if done:
                    self.rusage = ru
                    return
                time.sleep(0.005)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, _, self.rusage = os.wait4(pid, 0)


def _read_all(fd: int) -> bytes:
    out = b""
    while len(out) < 4096:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        out += chunk
    return out


def _decode_reply(msg: bytes, fds: list[int]) -> Reply:
    if not msg or len(fds) > 1:
        raise ValueError("empty reply or too many descriptors")
    obj = json.loads(msg)
    err, recs, denied, has_fd = obj["err"], obj["records"], obj["rule_denied"], obj["fd"]
    value = obj.get("value", 0)
    if not isinstance(err, int) or not 0 <= err < 4096 or not isinstance(recs, list) \
            or len(recs) > 16 or has_fd != bool(fds) or (has_fd and err) \
            or not isinstance(value, int) or not 0 <= value <= 1 << 31:
        raise ValueError("malformed reply")
    records: list[Record] = []
    for r in recs:
        op, path, allowed, rule = r
        if not (isinstance(op, str) and isinstance(path, str) and isinstance(allowed, bool)
                and isinstance(rule, str)):
            raise ValueError("malformed record")
        records.append((op, path, allowed, rule))
    return Reply(err, records, bool(denied), fds[0] if fds else None, value)


# -- the broker itself ----------------------------------------------------------------------

def _confine(ns: list[tuple[int, int]], root: int, sock: int, ready: int, engine: Any,
             ctx: Any) -> Executor:   # pragma: no cover - runs in the child
    """Become the sandbox (module doc); tell the monitor "ok" or why not on `ready`."""
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        fd_dir = os.open(f"/proc/{os.getpid()}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        privileges.close_fds({sock, ready, fd_dir, root, *(fd for fd, _ in ns)})
        top = os.stat("/")
        rst = os.fstat(root)
        # a view of its own (the mount layer ran), judged before we enter it
        mounted = (rst.st_dev, rst.st_ino) != (top.st_dev, top.st_ino)
        names = {CLONE_NEWUSER: "user", CLONE_NEWNS: "mnt", CLONE_NEWNET: "net"}
        # which differ from ours, all read before the first setns (then /proc is theirs)
        join = [(fd, flag) for fd, flag in ns
                if os.fstat(fd).st_ino != os.stat(f"/proc/self/ns/{names[flag]}").st_ino]
        for fd, flag in join:           # user first: it gives the rights for the others
            _setns(fd, flag)
        joined = bool(join)
        for fd, _ in ns:
            os.close(fd)
        if mounted:
            os.fchdir(root)
            os.chroot(".")
        os.chdir("/")
        os.close(root)
        prctl.set_no_new_privs(1)
        if joined or os.geteuid() == 0:
            privileges.drop_capabilities()
        if landlock.abi_version() >= 1 and ctx is not None:
            lctx = copy.copy(ctx)
            lctx.active = ["mounts"] if mounted else []
            # abstract sockets: the sandbox's own (its network namespace), which a
            # broker's separate domain would otherwise be scoped away from
            landlock.apply(lctx, abstract_scope=ctx.policy.network.mode == "host")
        unix = tuple(ctx.policy.network.unix) if ctx is not None else ()
        ex = Executor(engine, Root(os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC),
                                   fd_dir), unix)
    except BaseException as exc:
        os.write(ready, f"broker set-up: {type(exc).__name__}: {exc}".encode()[:4000])
        raise
    os.write(ready, b"ok")
    os.close(ready)
    return ex


def _serve(sock: socket.socket, ex: Executor) -> None:   # pragma: no cover - in the child
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, MAX_FRAME, MAX_FDS)
        except OSError:
            return
        if not msg:
            return
        fd = None
        try:
            try:
                req = _decode_request(msg)
                value = 0
                if isinstance(req, NetRequest):
                    value, recs = ex.execute_net(req, fds)
                else:
                    fd, recs = ex.execute(req)
                reply: dict[str, Any] = {"err": 0, "records": recs, "rule_denied": False,
                                         "value": value}
            except Denied as d:
                recs = list(getattr(d, "previous", []))
                recs.append((d.op, d.path, False, d.rule or MAGIC_RULE))
                reply = {"err": d.err, "records": recs, "rule_denied": bool(d.rule)}
            except OSError as exc:
                reply = {"err": exc.errno or errno.EIO, "rule_denied": False,
                         "records": list(getattr(exc, "records", None) or [])}
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                reply = {"err": errno.EINVAL, "records": [], "rule_denied": False,
                         "bad": str(exc)[:200]}
            reply["fd"] = fd is not None
            socket.send_fds(sock, [json.dumps(reply, ensure_ascii=True).encode()],
                            [fd] if fd is not None else [])
        finally:
            for f in fds:
                os.close(f)
            if fd is not None:
                os.close(fd)


def _decode_request(msg: bytes) -> Request | NetRequest:
    obj = json.loads(msg)
    if not isinstance(obj, dict):
        raise ValueError("request is not an object")
    if obj.get("kind") == "net":
        net = NetRequest(**obj)
        if not (isinstance(net.call, str) and isinstance(net.flags, int)
                and isinstance(net.addr, str) and isinstance(net.data, str)):
            raise ValueError("bad net request")
        return net
    req = Request(**obj)
    if not isinstance(req.paths, list) or not 1 <= len(req.paths) <= 2 or \
            not all(isinstance(p, str) for p in req.paths):
        raise ValueError("bad paths")
    return Request(**{**obj, "paths": tuple(req.paths)})


__all__ = ["BrokerProcess", "BrokerGone", "Reply", "MAX_FRAME"]
