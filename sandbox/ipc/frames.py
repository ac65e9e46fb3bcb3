"""Framing: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

One frame is one JSON object ``{"type": str, "payload": <any JSON>}`` plus
optional fields (``"mac"`` for authenticated runs). Length-prefixing (rather
than newline-delimited JSON) lets the reader reject an oversized frame from
its header alone, before buffering it, so a hostile child cannot make the
launcher allocate without bound. Numbers keep their JSON types: Python's json
module gives ints for integers and floats for the rest, so an int stays an
int across every hop (GoStage turns them all into float64). NaN and
Infinity are not JSON and are refused on both ends, and so is a number too
large for a double (``1e999`` would become Infinity). Nesting deeper than
`MAX_DEPTH` is refused as well: the peer may be hostile, and everything
after the decoder (deepcopy of the store, handlers, the result's JSON)
recurses.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

from sandbox.errors import ProtocolError

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20  # 1 MiB
MAX_DEPTH = 64  # arrays and objects inside one another, the frame's own object included

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    x = float(text)
    if math.isinf(x):
        raise ValueError(f"number {text[:40]} is out of range")
    return x


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# The C scanner `decode` itself calls (set in JSONDecoder.__init__; typeshed omits it)
_scan: Callable[[str, int], tuple[Any, int]] = getattr(_decoder, "scan_once")


def _depth_ok(obj: Any, limit: int) -> bool:
    """True when `obj` nests at most `limit` containers deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in node
                     if isinstance(child, (dict, list)))
    return True


def memory_cost(body: bytes, _opens: int = -1) -> int:
    """A conservative estimate of what `body` costs as Python objects, from byte counts
    alone (a few passes in C, no walk): the wire size understates it up to ~25x
    (`[],` is 3 bytes and a ~60-byte list plus its pointer). Each container is
    charged 64 bytes, each item separator 16, each string 80 (two quotes at 40)
    and each decimal point 24 (a float object)."""
    if _opens < 0:
        _opens = body.count(b"[") + body.count(b"{")
    return (len(body) + 64 * _opens + 16 * body.count(b",") + 40 * body.count(b'"')
            + 24 * body.count(b"."))


def _loads(text: str) -> Any:
    """One JSON value that is the whole of `text`. The C scanner alone, when the value
    starts at 0 and ends at the end (every frame our encoder writes); otherwise the
    decoder's full path, whitespace and error messages included. Same result either way:
    the scanner is the one `_decoder.decode` calls, with the same hooks."""
    try:
        obj, end = _scan(text, 0)
        if end == len(text):
            return obj
    except StopIteration:
        pass
    return _decoder.decode(text)


def parse_json(body: bytes, *, max_depth: int = MAX_DEPTH, _opens: int = -1) -> Any:
    """Strict JSON from a peer: UTF-8, finite numbers, at most `max_depth` deep.
    Raises ProtocolError, never anything else. (`_opens`: the body's count of ``[``
    and ``{``, when the caller has it already.)"""
    if _opens < 0:
        _opens = body.count(b"[") + body.count(b"{")
    try:
        obj = _loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"frame nests deeper than {max_depth} levels") from None
    # Cheap pre-check: fewer brackets than the limit cannot nest deeper than it.
    if _opens > max_depth and not _depth_ok(obj, max_depth):
        raise ProtocolError(f"frame nests deeper than {max_depth} levels")
    return obj


@dataclass
class Message:
    type: str
    payload: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. "mac"; unknown fields kept
    size: int = 0  # bytes on the wire, header included (0 when not read from a wire)
    cost: int = 0  # estimated bytes of the decoded payload in memory (see `memory_cost`)

    def to_obj(self) -> dict[str, Any]:
        obj = {"type": self.type, "payload": self.payload}
        obj.update(self.extra)
        return obj


def encode(type_: str, payload: Any = None, *, max_frame: int = DEFAULT_MAX_FRAME,
           **extra: Any) -> bytes:
    """One frame. Raises ProtocolError for non-JSON values or an oversized frame."""
    obj = {"type": type_, "payload": payload, **extra}
    try:
        body = _encoder.encode(obj).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"message {type_!r} is not JSON-serialisable: {exc}") from None
    if len(body) > max_frame:
        raise ProtocolError(f"message {type_!r} is {len(body)} bytes, over the "
                            f"{max_frame}-byte frame limit")
    return HEADER.pack(len(body)) + body


def decode_payload(body: bytes) -> Message:
    """Parse one frame body (without header) into a Message."""
    opens = body.count(b"[") + body.count(b"{")   # counted once: depth check and cost
    obj = parse_json(body, _opens=opens)
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not obj["type"]:
        raise ProtocolError("frame is not a JSON object with a non-empty string 'type'")
    type_ = obj.pop("type")
    payload = obj.pop("payload", None)
    return Message(type_, payload, obj, len(body) + HEADER.size, memory_cost(body, opens))


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole Messages out.

    Buffers at most one frame (`max_frame` bytes); a header announcing more
    raises ProtocolError at once.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > self.max_frame:
                raise ProtocolError(f"frame of {n} bytes announced, over the "
                                    f"{self.max_frame}-byte limit")
            if len(buf) - pos - HEADER.size < n:
                break
            start = pos + HEADER.size
            out.append(decode_payload(bytes(buf[start:start + n])))
            pos = start + n
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF = truncated)."""
        return len(self._buf)
