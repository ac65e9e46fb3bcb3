"""Messages of a fixed form, written and read without the typed codec.

The zygote's loop, the stub and PID 1 are forks of the warm template, and every
page the codec's Python writes there becomes the sandbox's program's own copy. So
the few messages they exchange on every run are bytes made once, or read by a check
written out for that one shape; tests/test_protocol.py holds each to the codec."""
from __future__ import annotations

import math
import os
import socket

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import json_bytes, parse_json
from sandbox.protocol.bounds import DATAGRAM_MAX, bounds_of
from sandbox.protocol.messages import Ack, CowFd, ForkStub, OutputFd, Ready, ScratchFd, ShmFd
from sandbox.protocol.wire import TRUNCATED, to_datagram

__all__ = ['forked_datagram', 'fork_stub_from_datagram', 'ACK_OK', 'FD_DATAGRAMS',
           'listener_datagram', 'ready_datagram', 'send_fd', 'recv_ack_ok']


def forked_datagram(pid: int) -> bytes:
    """`to_datagram(Forked(pid))` without the codec, for the zygote's loop: every page that
    loop writes while a stub lives becomes the stub's own copy (and its sandbox's PID
    2's), and the typed codec writes many (tests/test_protocol.py holds the two equal)."""
    return b'{"type":"forked","payload":{"pid":%d}}' % pid


def fork_stub_from_datagram(data: bytes) -> ForkStub:
    """`from_datagram(data, ForkStub)` without the typed codec's Python, for the new stub
    (sandbox.monitor.zygote): each of its functions the stub runs writes pages that
    are then its Python action's own (~190 KiB). The same checks, written out for
    this one shape: the envelope, exactly the three fields, two booleans, at most 16
    strings of at most 4096 characters (tests/test_protocol.py holds it to the
    codec)."""
    if len(data) > DATAGRAM_MAX:
        raise ProtocolError(f"envelope of {len(data)} bytes, over {DATAGRAM_MAX}")
    obj = parse_json(data)
    if type(obj) is not dict or obj.keys() != _ENVELOPE_KEYS:
        raise ProtocolError("not an envelope {type, payload}")
    if obj["type"] != "fork_stub":
        raise ProtocolError(f"unexpected message {str(obj['type'])[:64]!r} (want fork_stub)")
    body = obj["payload"]
    if type(body) is not dict or body.keys() != _FORK_STUB_KEYS:
        raise ProtocolError("fork_stub: want exactly namespaces, network, cgroup_procs")
    ns, net, procs = body["namespaces"], body["network"], body["cgroup_procs"]
    if type(ns) is not bool or type(net) is not bool:
        raise ProtocolError("fork_stub: namespaces and network want booleans")
    if type(procs) is not list or len(procs) > 16 \
            or any(type(p) is not str or len(p) > 4096 for p in procs):
        raise ProtocolError("fork_stub.cgroup_procs: want a list of at most 16 strings of "
                            "at most 4096 characters")
    return ForkStub(namespaces=ns, network=net, cgroup_procs=procs)


_ENVELOPE_KEYS = frozenset({"type", "payload"})
_FORK_STUB_KEYS = frozenset({"namespaces", "network", "cgroup_procs"})


# PID 1's messages to the monitor that have a fixed form, as bytes made once, in the
# template: the typed codec's Python in PID 1 writes pages that are then its Python
# action's own (docs/benchmarks-journal.md). tests/test_protocol.py holds them to the codec.
ACK_OK = to_datagram(Ack(ok=True))
FD_DATAGRAMS: dict[type, bytes] = {cls: to_datagram(cls())
                                   for cls in (OutputFd, CowFd, ScratchFd, ShmFd)}


def listener_datagram(fd: int) -> bytes:
    """`to_datagram(ListenerAt(fd))` without the codec (above)."""
    return b'{"type":"listener","payload":{"fd":%d}}' % fd


_READY_BOUNDS = tuple(bounds_of(Ready, name) for name in ("active", "skipped", "timings"))


def ready_datagram(active: list[str], skipped: dict[str, str],
                   timings: dict[str, float]) -> bytes:
    """`to_datagram(Ready(active, skipped, timings))`, without the codec when every
    string is ASCII within its bound and every timing a finite float (a fresh fork's
    first Ready through the codec copies ~250 KiB: the program's, PID 1 sends it just
    before it forks the program); anything else goes through the codec, which says
    why it does not fit. tests/test_protocol.py holds the two equal."""
    act, skip, tim = _READY_BOUNDS
    if len(active) > act.items or len(skipped) > skip.items or len(timings) > tim.items \
            or not all(type(a) is str and a.isascii() and len(a) <= act.chars
                       for a in active) \
            or not all(type(k) is str and k.isascii() and len(k) <= skip.chars
                       and type(v) is str and v.isascii() and len(v) <= skip.chars
                       for k, v in skipped.items()) \
            or not all(type(k) is str and k.isascii() and len(k) <= tim.chars
                       and type(v) is float and math.isfinite(v) for k, v in timings.items()):
        return to_datagram(Ready(active=list(active), skipped=dict(skipped),
                                 timings=dict(timings)))
    return json_bytes({"type": "ready", "payload": {"active": active, "skipped": skipped,
                                                    "timings": timings}})


def send_fd(sock: socket.socket, cls: type, fd: int) -> None:
    """`send(sock, cls(), [fd])` for a message of no field (FD_DATAGRAMS), without the
    codec."""
    socket.send_fds(sock, [FD_DATAGRAMS[cls]], [fd])


def recv_ack_ok(sock: socket.socket) -> bool:
    """Whether the next datagram is `Ack(ok=True)` with no descriptor (any descriptor
    that came is closed): `recv(sock, Ack, max_fds=0)` and its `ok`, without the
    codec; anything else is False, as a refusal is."""
    data, fds, flags, _ = socket.recv_fds(sock, len(ACK_OK) + 1, 1)
    for fd in fds:
        os.close(fd)
    return not fds and not flags & TRUNCATED and data == ACK_OK
