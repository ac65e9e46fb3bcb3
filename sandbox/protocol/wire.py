"""The envelope ``{"type": NAME, "payload": {...}}`` and its two transports: one
datagram on a SOCK_SEQPACKET socket (descriptors beside it with SCM_RIGHTS), or one
length-prefixed frame on the launcher's control stream. A receiver names the types
it accepts at that point; anything else is a ProtocolError."""
from __future__ import annotations

import os
import socket
import typing
from typing import TYPE_CHECKING, TypeVar

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import dumps, encode as _frame, json_bytes, parse_json
from sandbox.protocol.bounds import DATAGRAM_MAX, MAX_FDS
from sandbox.protocol.messages import MESSAGES, NAMES
from sandbox.protocol.codec import from_obj, max_size, to_obj

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ['name_of', 'parse', 'to_frame', 'envelope_max', 'from_envelope',
           'to_datagram', 'from_datagram', 'TRUNCATED', 'send', 'recv', 'resolve_all']

T = TypeVar("T")


# -- the envelope and its transports ---------------------------------------------------
def name_of(msg: object) -> str:
    try:
        return NAMES[type(msg)]
    except KeyError:
        raise ProtocolError(f"{type(msg).__name__} is not a message of sandbox.protocol") \
            from None


def parse(type_: str, payload: object, *accept: type[T]) -> T:
    """The message a received envelope holds, if it is one of `accept` and exactly of
    its shape; else ProtocolError."""
    cls = MESSAGES.get(type_) if isinstance(type_, str) else None
    if cls is None or cls not in accept:
        want = ", ".join(NAMES[c] for c in accept)
        raise ProtocolError(f"unexpected message {str(type_)[:64]!r} (want {want})")
    return typing.cast(T, from_obj(cls, payload))


def to_frame(msg: DataclassInstance, max_frame: int) -> bytes:
    """One length-prefixed frame for the launcher's control stream."""
    return _frame(name_of(msg), to_obj(msg), max_frame=max_frame)


def envelope_max(cls: type) -> int:
    """The most bytes a message of this type takes as an envelope on the wire (the
    compiled stub and init size their buffers by it: tested)."""
    return len(dumps({"type": NAMES[cls], "payload": None})) - 4 + max_size(cls)


def from_envelope(data: bytes, *accept: type[T], limit: int = DATAGRAM_MAX) -> T:
    """The message one envelope (at most `limit` bytes) holds, if it is one of
    `accept` and exactly of its shape; else ProtocolError."""
    if len(data) > limit:
        raise ProtocolError(f"envelope of {len(data)} bytes, over {limit}")
    obj = parse_json(data)
    if not isinstance(obj, dict) or set(obj) != {"type", "payload"}:
        raise ProtocolError("not an envelope {type, payload}")
    return parse(obj["type"], obj["payload"], *accept)


def to_datagram(msg: DataclassInstance) -> bytes:
    data = json_bytes({"type": name_of(msg), "payload": to_obj(msg)})
    if len(data) > DATAGRAM_MAX:
        raise ProtocolError(f"{name_of(msg)}: {len(data)} bytes, over the {DATAGRAM_MAX}-byte "
                            "datagram bound")
    return data


def from_datagram(data: bytes, *accept: type[T]) -> T:
    return from_envelope(data, *accept, limit=DATAGRAM_MAX)


# MSG_TRUNC | MSG_CTRUNC as a plain int, computed once: `|` of socket's IntFlag members
# runs the enum module's Python, ~190 KiB of page copies in a fresh fork of the
# template (the stub and PID 1 test it on every datagram they take)
TRUNCATED = int(socket.MSG_TRUNC) | int(socket.MSG_CTRUNC)


def send(sock: socket.socket, msg: DataclassInstance, fds: typing.Sequence[int] = ()) -> None:
    """One message as one datagram (SOCK_SEQPACKET), `fds` beside it (SCM_RIGHTS)."""
    data = to_datagram(msg)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket, *accept: type[T],
         max_fds: int = MAX_FDS) -> tuple[T | None, list[int]]:
    """The next message (None at end of stream) and the descriptors beside it. A message
    that is not one of `accept`, truncated, or with more descriptors than `max_fds`,
    raises ProtocolError; the descriptors that came with it are closed first."""
    data, fds, flags, _ = socket.recv_fds(sock, DATAGRAM_MAX + 1, max_fds)
    try:
        if flags & TRUNCATED:
            raise ProtocolError("datagram or its descriptors truncated")
        if not data:
            if fds:
                raise ProtocolError("descriptors without a message")
            return None, []
        return from_datagram(data, *accept), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def resolve_all() -> None:
    """Fill the codec's caches (`_hints`, `_fields`, `_kind`) for every message class
    and those nested in them. The monitor host calls it before it forks its template
    (sandbox.monitor.preload), so that the stub, PID 1 and a Python action fill
    nothing (issue 14). Any other process (the CLI, a launcher) fills them class by
    class as it uses them: resolving all at import was ~5 ms of every start here."""
    for cls in MESSAGES.values():
        max_size(cls)   # resolves the hints of every nested message class too
