"""Connects and addressed sends performed for the sandbox (issue 10, finding 6).

With a private network (mode none or loopback) a pathname UNIX socket is the
one way out of the network namespace: a host daemon's socket visible in the
view (a Docker socket in a read-only workdir) answered the sandbox. seccomp
cannot read a sockaddr and Landlock (ABI 7) cannot restrict pathname
connects, so the monitor mediates ``connect`` and addressed sends on UNIX
sockets, and never answers CONTINUE on a checked address (the caller could
change it): it takes the caller's socket (``pidfd_getfd``), copies the
address (and the data of a datagram), and the broker process, in the
sandbox's namespaces and root with its credentials, performs the call:

- an abstract or unnamed address is the sandbox's own (the abstract
  namespace belongs to its private network namespace): performed as is;
- a pathname is resolved by the kernel in the sandbox's root (``openat2
  RESOLVE_IN_ROOT``, following links as connect does) to an ``O_PATH``
  descriptor of the socket inode, then allowed only when that inode is bound
  in the sandbox's own network namespace (``sock_diag`` UNIX_DIAG_VFS: a
  socket the sandbox made) or its real path is named by ``network.unix``;
- the call is made on ``/proc/<broker>/fd/<n>`` of that descriptor (a
  relative name from the broker's own fd directory): the kernel connects to
  the inode decided on, never re-resolving the caller's name.

Refused: EACCES (recorded with the rule), the socket's own errors otherwise.
"""
from __future__ import annotations

import array
import base64
import errno
import os
import socket
import stat
import struct
from dataclasses import dataclass

from sandbox.monitor.refusals import Denied
from sandbox.monitor.root_walk import WALK, Root, openat2

MAX_SEND = 32 * 1024     # data copied for one brokered datagram (larger: EMSGSIZE)
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, UDIAG_SHOW_VFS, UNIX_DIAG_VFS = 4, 20, 2, 1
NLM_F_REQUEST, NLM_F_DUMP, NLMSG_DONE, NLMSG_ERROR = 1, 0x300, 3, 2
OUTSIDE_RULE = "network.unix: a socket outside the sandbox that the policy does not name"
OWN_RULE = "sandbox: a socket bound in the sandbox"
NO_NETWORK_RULE = "network.none: the sandbox has no network"
Record = tuple[str, str, bool, str]


@dataclass(frozen=True)
class NetRequest:
    """connect / sendto / sendmsg on the caller's socket (sent as the first descriptor;
    SCM_RIGHTS descriptors follow it). `addr`: the sockaddr bytes, base64, with a
    relative sun_path already made absolute; empty for a send without address."""
    call: str
    flags: int
    addr: str
    data: str = ""
    kind: str = "net"


def encode_addr(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _bound_inodes() -> set[tuple[int, int, int]]:
    """(major, minor, ino) of every pathname socket bound in this network namespace."""
    out: set[tuple[int, int, int]] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as nl:
        req = struct.pack("=BBHIIIII", socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_VFS,
                          0xFFFFFFFF, 0xFFFFFFFF)
        nl.send(struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY,
                            NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + req)
        while True:
            data = nl.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, pos)
                if length < 16:
                    return out
                if kind == NLMSG_DONE or kind == NLMSG_ERROR:
                    return out
                body = pos + 16 + 16          # nlmsghdr + unix_diag_msg
                end = pos + length
                while body + 4 <= end:
                    alen, atype = struct.unpack_from("=HH", data, body)
                    if alen < 4:
                        break
                    if atype == UNIX_DIAG_VFS and alen >= 12:
                        ino, dev = struct.unpack_from("=II", data, body + 4)
                        out.add((dev >> 20, dev & 0xFFFFF, ino))
                    body += (alen + 3) & ~3
                pos += (length + 3) & ~3
            if not data:
                return out


def execute_net(root: Root, unix_allowed: tuple[str, ...], req: NetRequest, fds: list[int]
                ) -> tuple[int, list[Record]]:
    """(the call's return value, records); raises OSError (with .records) or Denied."""
    if not fds:
        raise OSError(errno.EBADF, "no socket")
    op = "connect" if req.call == "connect" else "send"
    raw = base64.b64decode(req.addr)
    data = base64.b64decode(req.data)
    rights = fds[1:]
    sock = socket.socket(fileno=os.dup(fds[0]))
    held = -1
    try:
        target: str | bytes | None = None
        recs: list[Record] = []
        if raw:
            if len(raw) < 2 or int.from_bytes(raw[:2], "little") != socket.AF_UNIX:
                raise OSError(errno.EINVAL, "not an AF_UNIX address")
            name = raw[2:]
            if not name or name[0] == 0:          # unnamed or abstract: the sandbox's own
                target = name
                recs.append((op, "@" + name[1:].decode("utf-8", "replace"), True,
                             "sandbox: abstract address in its own network namespace"))
            else:
                path = name.split(b"\0", 1)[0]
                try:
                    held = openat2(root.fd, path, os.O_PATH | os.O_CLOEXEC, 0, WALK)
                except OSError as exc:
                    exc.records = [(op, os.fsdecode(path), False,   # type: ignore[attr-defined]
                                    "kernel: no such socket in the view")]
                    raise
                st = os.fstat(held)
                real = root.fd_path(held)
                if not stat.S_ISSOCK(st.st_mode):
                    refused = OSError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
                    refused.records = [(op, real, False,   # type: ignore[attr-defined]
                                        "kernel: not a socket")]
                    raise refused
                if real in unix_allowed:
                    rule = f"network.unix: {real}"
                elif (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in _bound_inodes():
                    rule = OWN_RULE
                else:
                    raise Denied(errno.EACCES, op, real, OUTSIDE_RULE)
                recs.append((op, real, True, rule))
                target = str(held) if root.fd_dir is not None else f"/proc/self/fd/{held}"
        try:
            if target is not None and root.fd_dir is not None and isinstance(target, str):
                os.fchdir(root.fd_dir)            # the name is our descriptor's, not theirs
            if req.call == "connect":
                if target is None:
                    raise OSError(errno.EINVAL, "connect without an address")
                sock.connect(target)
                value = 0
            elif req.call == "sendmsg":
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", rights).tobytes())] \
                    if rights else []
                value = sock.sendmsg([data], anc, req.flags, *(() if target is None else (target,)))
            else:
                value = sock.sendto(data, req.flags, target) if target is not None \
                    else sock.send(data, req.flags)
        except OSError as exc:
            exc.records = recs   # type: ignore[attr-defined]
            raise
        finally:
            os.fchdir(root.fd)
        return value, recs
    finally:
        sock.close()
        if held >= 0:
            os.close(held)


__all__ = ["NetRequest", "execute_net", "encode_addr", "MAX_SEND"]
