"""Framing: round trips, types, limits, incremental decoding."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.errors import ProtocolError
from sandbox.ipc import frames as F
from sandbox.ipc.frames import FrameDecoder, encode


def test_round_trip_keeps_json_types():
    payload = {"i": 1, "f": 1.0, "b": False, "n": None, "s": "é", "l": [1, [2]], "big": 2**70}
    (msg,) = FrameDecoder().feed(encode("x", payload))
    assert msg.type == "x" and msg.payload == payload
    assert type(msg.payload["i"]) is int and type(msg.payload["f"]) is float


def test_decoding_byte_by_byte():
    data = encode("a", 1) + encode("b", [2]) + encode("c")
    dec = FrameDecoder()
    got = [m for i in range(len(data)) for m in dec.feed(data[i:i + 1])]
    assert [(m.type, m.payload) for m in got] == [("a", 1), ("b", [2]), ("c", None)]
    assert dec.pending == 0


def test_oversized_frame_refused_from_header():
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(ProtocolError, match="over the 10-byte limit"):
        dec.feed(struct.pack(">I", 11))


def test_encode_refuses_oversized_and_non_json():
    with pytest.raises(ProtocolError, match="frame limit"):
        encode("x", "y" * 100, max_frame=50)
    with pytest.raises(ProtocolError, match="not JSON"):
        encode("x", float("nan"))
    with pytest.raises(ProtocolError, match="not JSON"):
        encode("x", {1, 2})


@pytest.mark.parametrize("body", [b"[1]", b'{"payload": 1}', b'{"type": ""}', b'{"type": 3}',
                                  b"\xff\xfe", b'{"type": "x", "payload": NaN}'])
def test_malformed_bodies_are_protocol_errors(body):
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(struct.pack(">I", len(body)) + body)


def test_extra_fields_are_kept():
    (msg,) = FrameDecoder().feed(encode("x", 1, mac="abc"))
    assert msg.extra == {"mac": "abc"}


# --- the decoder's fast path (frames.parse_json) decides exactly as the full decoder -----
def _reference(body: bytes):
    """What a frame body decoded to before the fast path: the decoder's own `decode`,
    the depth walk, the object check. Either a Message's fields or "refused"."""
    try:
        obj = F._decoder.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "refused"
    if not F._depth_ok(obj, F.MAX_DEPTH):
        return "refused"
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not obj["type"]:
        return "refused"
    t = obj.pop("type")
    p = obj.pop("payload", None)
    return (t, json.dumps(p, sort_keys=True), json.dumps(obj, sort_keys=True))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids,
                                                              max_size=3),
    max_leaves=12)
_texts = st.one_of(
    st.builds(lambda t, p, pad_l, pad_r: (pad_l + json.dumps(
        {"type": t, "payload": p}) + pad_r), st.text(max_size=6), _json_values,
        st.sampled_from(["", " ", "\n", "\t "]), st.sampled_from(["", " ", "\r\n", "x", "{}",
                                                                   ",", "]"])),
    st.text(max_size=40),
    st.sampled_from(['{"type":"a","payload":NaN}', '{"type":"a","payload":1e999}',
                     '{"type":"a","payload":Infinity}', '{"type":"a"} {"type":"b"}',
                     '[' * 70 + ']' * 70, '{"type":"a","payload":' + '[' * 70 + ']' * 70 + '}',
                     '{"type":"a","type":"b"}', '"x"', '']))


@settings(max_examples=400, deadline=None)
@given(st.one_of(_texts.map(lambda s: s.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=40)))
def test_the_fast_decoder_accepts_and_refuses_exactly_what_the_full_decoder_does(body):
    want = _reference(body)
    try:
        m = F.decode_payload(body)
        got = (m.type, json.dumps(m.payload, sort_keys=True),
               json.dumps(m.extra, sort_keys=True))
    except ProtocolError:
        got = "refused"
    assert got == want


# --- the encoder made once (frames.dumps) writes what json's own encoder writes -------
_STANDARD = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _standard(obj):
    try:
        return _STANDARD.encode(obj)
    except (TypeError, ValueError):
        return "refused"


def _ours(obj):
    try:
        return F.dumps(obj)
    except (TypeError, ValueError):
        return "refused"


_any_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from([b"x", (1, 2), {1, 2}, object()]),
    lambda kids: st.lists(kids, max_size=3) | st.tuples(kids, kids)
    | st.dictionaries(st.text(max_size=4) | st.integers() | st.booleans() | st.none(), kids,
                      max_size=3),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_any_values)
def test_the_shared_encoder_writes_and_refuses_exactly_what_json_does(value):
    assert _ours(value) == _standard(value)
    # Twice: the encoder keeps nothing from one call to the next.
    assert _ours(value) == _standard(value)


def test_a_payload_that_contains_itself_is_a_protocol_error():
    loop: list = [1]
    loop.append(loop)
    with pytest.raises(ProtocolError, match="contains itself"):
        encode("x", loop)
    (msg,) = FrameDecoder().feed(encode("x", [1, [2]]))   # and the encoder still works
    assert msg.payload == [1, [2]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=5), _json_values), min_size=1,
                max_size=8),
       st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_a_stream_decodes_the_same_however_it_is_cut(messages, cuts):
    """The decoder slices bodies from the read itself when nothing was pending and
    from its buffer otherwise: any cut of the stream gives the same messages."""
    stream = b"".join(encode(t, p) for t, p in messages)
    marks = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    dec = FrameDecoder()
    got = []
    for a, b in zip(marks, marks[1:]):
        got += [(m.type, m.payload, m.size) for m in dec.feed(stream[a:b])]
    assert dec.pending == 0
    assert got == [(t, p, len(encode(t, p))) for t, p in messages]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(alphabet='[]{},".x1', max_size=600).map(str.encode))
def test_the_memory_cost_is_the_same_by_table_or_by_counts(body):
    """Small bodies are costed with a byte table, large ones with counts: the same
    charge either way (each container 64, separator 16, quote 40, decimal point 24)."""
    want = (len(body) + 64 * (body.count(b"[") + body.count(b"{")) + 16 * body.count(b",")
            + 40 * body.count(b'"') + 24 * body.count(b"."))
    assert F.memory_cost(body) == want
    assert F.memory_cost(bytearray(body)) == want
