"""Framing: round trips, types, limits, incremental decoding."""
from __future__ import annotations

import struct

import pytest

from sandbox.errors import ProtocolError
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
