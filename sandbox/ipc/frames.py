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



def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _make_dumps() -> Callable[[Any], str]:
    """Compact strict JSON text (no NaN or Infinity, UTF-8 kept as is), from one C
    encoder made once. `json.JSONEncoder.encode` builds a new C encoder for every
    call, about half of what encoding a small frame costs (callgrind: 14,000
    instructions against 7,600). This one keeps no state between calls (no
    `markers`: a structure that contains itself ends in RecursionError, which the
    callers report), so threads may share it. Without the C module, the plain
    encoder."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(ensure_ascii=False, allow_nan=False,
                                separators=(",", ":")).encode
    one = make(None, _not_json, json.encoder.encode_basestring, None, ":", ",",
               False, False, False)

    def dumps(obj: Any) -> str:
        return "".join(one(obj, 0))
    return dumps


dumps = _make_dumps()


def json_bytes(obj: Any) -> bytes:
    """`dumps(obj)` as UTF-8, a lone surrogate written as its JSON escape.

    WHY: a name that is not UTF-8 (an argument, an environment value, a working
    directory) reaches Python as a str holding lone surrogates (os.fsdecode's
    surrogateescape), which UTF-8 cannot encode. A surrogate can only stand
    inside a JSON string here, so `backslashreplace` writes exactly the JSON
    escape `\udcff`; the peer's parser gives the same surrogate back, and
    os.fsencode the original byte. (The codec used to turn them into the text
    `\\udcff`: `printf '%s' $'a\xffb'` printed `a\udcffb` and exited 0.)"""
    return dumps(obj).encode("utf-8", "backslashreplace")


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


# memory_cost's weights as one byte table: every byte 1, plus its charge. For a small
# body one translate and a sum beat five `count` calls (each ~1,200 instructions of
# call overhead: callgrind, 2,700 against 6,500 for a 36-byte frame); past ~230
# bytes the counts' memchr loops win.
_COST_TABLE = bytes(1 + {ord("["): 64, ord("{"): 64, ord(","): 16, ord('"'): 40,
                         ord("."): 24}.get(i, 0) for i in range(256))
_SMALL = 256


def memory_cost(body: bytes | bytearray, _opens: int = -1) -> int:
    """A conservative estimate of what `body` costs as Python objects, from byte counts
    alone (a few passes in C, no walk): the wire size understates it up to ~25x
    (`[],` is 3 bytes and a ~60-byte list plus its pointer). Each container is
    charged 64 bytes, each item separator 16, each string 80 (two quotes at 40)
    and each decimal point 24 (a float object)."""
    if len(body) <= _SMALL:
        return sum(body.translate(_COST_TABLE))
    if _opens < 0:
        _opens = body.count(b"[") + body.count(b"{")
    return (len(body) + 64 * _opens + 16 * body.count(b",") + 40 * body.count(b'"')
            + 24 * body.count(b"."))


def parse_json(body: bytes | bytearray, *, max_depth: int = MAX_DEPTH,
               _opens: int = -1) -> Any:
    """Strict JSON from a peer: UTF-8, finite numbers, at most `max_depth` deep.
    Raises ProtocolError, never anything else. (`_opens`: the body's count of ``[``
    and ``{``, when the caller has it already.)

    A value that spans the whole text (every frame our encoder writes) is read by
    the C scanner alone; anything else (whitespace, trailing bytes, errors) takes
    the decoder's full path, error messages included. Same result either way: the
    scanner is the one `_decoder.decode` calls, with the same hooks."""
    if _opens < 0:
        _opens = body.count(b"[") + body.count(b"{")
    try:
        text = body.decode("utf-8")
        try:
            obj, end = _scan(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            obj = _decoder.decode(text)
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
        body = json_bytes(obj)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"message {type_!r} is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise ProtocolError(f"message {type_!r} is not JSON-serialisable: it contains "
                            "itself, or nests too deep") from None
    if len(body) > max_frame:
        raise ProtocolError(f"message {type_!r} is {len(body)} bytes, over the "
                            f"{max_frame}-byte frame limit")
    # What the peer's parse_json refuses is refused here, where the sender can say so:
    # a store value 62 levels deep went out in a `start` frame (66 levels) and the
    # child failed with a ProtocolError of its own. Fewer brackets than the limit
    # (brackets inside strings count too) cannot nest deeper than it.
    if len(body) > MAX_DEPTH and body.count(b"[") + body.count(b"{") > MAX_DEPTH \
            and not _depth_ok(obj, MAX_DEPTH):
        raise ProtocolError(f"message {type_!r} nests deeper than {MAX_DEPTH} levels "
                            "(the frame's own object included)")
    return HEADER.pack(len(body)) + body


def decode_payload(body: bytes | bytearray) -> Message:
    """Parse one frame body (without header) into a Message."""
    n = len(body)
    # Brackets counted once, for the depth check and the cost; a body no longer than
    # MAX_DEPTH cannot hold more than MAX_DEPTH of them, and needs no count.
    opens = 0 if n <= MAX_DEPTH else body.count(b"[") + body.count(b"{")
    obj = parse_json(body, _opens=opens)
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not obj["type"]:
        raise ProtocolError("frame is not a JSON object with a non-empty string 'type'")
    type_ = obj.pop("type")
    payload = obj.pop("payload", None)
    return Message(type_, payload, obj, n + HEADER.size,
                   memory_cost(body, opens if n > MAX_DEPTH else -1))


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole Messages out.

    Buffers at most one frame (`max_frame` bytes); a header announcing more
    raises ProtocolError at once.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The whole frames buffered so far, decoded. Each body is sliced once from
        `data` itself when nothing was pending (the usual case: a read ends on a
        frame boundary or inside the last frame), else from the buffer; what is
        left of an incomplete frame is kept."""
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        out: list[Message] = []
        pos = 0
        size, limit, unpack = HEADER.size, self.max_frame, HEADER.unpack_from
        end = len(buf)
        while end - pos >= size:
            (n,) = unpack(buf, pos)
            if n > limit:
                raise ProtocolError(f"frame of {n} bytes announced, over the "
                                    f"{limit}-byte limit")
            start = pos + size
            if end - start < n:
                break
            pos = start + n
            out.append(decode_payload(buf[start:pos]))
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < end:
            self._buf += memoryview(data)[pos:]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered (non-zero at EOF = truncated)."""
        return len(self._buf)
