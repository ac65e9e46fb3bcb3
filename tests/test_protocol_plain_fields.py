"""The codec's inline path for plain fields (codec._plain, and its twin in _Dec.obj)
gives exactly what the full path gives: every field through `value`, as before."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given, settings, strategies as st

from sandbox.ipc.frames import json_bytes
from sandbox.protocol import codec
from sandbox.errors import ProtocolError
from sandbox.protocol import StubReady, bound


@dataclass(frozen=True)
class MountStep:
    """A nested message of plain fields (the shape the mount table had on the wire)."""
    kind: str = bound(chars=16, default="")
    path: str = bound(chars=4096, default="")
    source: str = bound(chars=4096, default="")
    is_dir: bool = True
    attrs: int = 0
    exec: bool = False


@dataclass
class MountTable:
    """A list of nested messages and a list of pairs, each within bounds."""
    steps: list[MountStep] = bound(items=4096, budget=1 << 20, default_factory=list)
    real: list[tuple[str, str]] = bound(chars=4096, items=4096, budget=1 << 20,
                                        default_factory=list)


class _FullEnc(codec._Enc):
    """The encoder as it was: every field through `value`."""

    def obj(self, cls: Any, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, cls):
            raise ProtocolError(f"{where or cls.__name__}: not {cls.__name__}")
        return {name: self.value(hint, getattr(v, name), meta,
                                 f"{where}.{name}" if where else name)
                for name, hint, meta in codec._fields(cls)
                if not (name == "clipped" and not where)}

    def value(self, tp: Any, v: Any, meta: dict[str, Any], where: str) -> Any:
        tp2, _, kind, args = codec._kind(tp)
        if kind == codec._LIST and v is not None:   # item by item, measured each
            seq, out = list(v), []
            items, budget, used = meta.get("items", codec.DEFAULT_ITEMS), meta.get("budget"), 2
            for i, item in enumerate(seq):
                if len(out) >= items:
                    self.clip(where, len(seq) - i, f"{len(seq)} items, over its {items}")
                    break
                enc = self.value(args[0], item, meta, where + "[]")
                if budget is not None:
                    used += len(json_bytes(enc)) + 1
                    if used > budget:
                        self.clip(where, len(seq) - i, f"over its {budget} bytes")
                        break
                out.append(enc)
            return out
        if kind == codec._TUPLE and v is not None:
            return [self.value(a, x, meta, f"{where}[{i}]")
                    for i, (a, x) in enumerate(zip(args, v, strict=True))]
        return super().value(tp, v, meta, where)


class _FullDec(codec._Dec):
    """The decoder as it was: every field through `value`."""

    def obj(self, cls: Any, v: Any, where: str) -> Any:
        fields = codec._fields(cls)
        if not isinstance(v, dict) or set(v) - {n for n, _, _ in fields}:
            raise ProtocolError("shape")
        if self.strict and {n for n, _, _ in fields} - set(v):
            raise ProtocolError("missing")
        return cls(**{name: self.value(hint, v[name], meta, name)
                      for name, hint, meta in fields if name in v})


class _Str(str):
    pass


class _Int(int):
    pass


texts = st.one_of(st.text(max_size=20),
                  st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                          min_size=1, max_size=3), st.text(alphabet="ab", min_size=14, max_size=18),
                  st.text(alphabet="aé", min_size=4090, max_size=4100),
                  st.builds(_Str, st.text(max_size=4)))
ints = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**64),
                 st.integers(min_value=-2**64, max_value=-2**63 + 1), st.builds(_Int, st.integers(0, 9)))
anything = st.one_of(texts, ints, st.booleans(), st.none(), st.floats(allow_nan=False))
steps = st.builds(MountStep, kind=st.one_of(texts, anything), path=texts, source=anything,
                  is_dir=st.one_of(st.booleans(), ints), attrs=st.one_of(ints, st.booleans()),
                  exec=anything)


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except (ProtocolError, TypeError, ValueError) as exc:
        return ("error", type(exc))


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.lists(steps, max_size=4), st.lists(st.tuples(texts, st.one_of(texts, ints)), max_size=3))
def test_encoding_a_mount_table_is_what_every_field_through_value_gives(
        s: list[MountStep], real: list[tuple[Any, Any]]) -> None:
    table = MountTable(steps=s, real=real)
    for clip in (True, False):
        fast, full = codec._Enc(clip=clip), _FullEnc(clip=clip)
        a = _outcome(lambda: fast.obj(MountTable, table, ""))
        b = _outcome(lambda: full.obj(MountTable, table, ""))
        assert a == b
        assert fast.clipped == full.clipped


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["ok", "why", "layer"]), anything, max_size=3),
       st.booleans())
def test_decoding_is_what_every_field_through_value_gives(obj: dict[str, Any],
                                                          strict: bool) -> None:
    a = _outcome(lambda: codec._Dec(strict=strict).obj(StubReady, obj, ""))
    b = _outcome(lambda: _FullDec(strict=strict).obj(StubReady, obj, ""))
    assert a == b
    if a[0] == "ok":
        for name in ("ok", "why", "layer"):
            assert type(getattr(a[1], name)) is type(getattr(b[1], name))


@pytest.mark.parametrize("value", ["é" * 3, "a\udc80", "x" * 17, _Str("ab")])
def test_a_string_the_inline_path_must_not_take(value: str) -> None:
    """Non-ASCII (a lone surrogate is escaped), over its bound, a str subclass: the full
    path (escaped, clipped, made a plain str), never passed through as it is."""
    enc = codec._Enc(clip=True)
    out = enc.obj(MountStep, MountStep(kind=value), "")
    assert type(out["kind"]) is str
    assert out["kind"] == codec._Enc(clip=True).value(str, value, {"chars": 16}, "kind")


short = st.one_of(st.text(max_size=8), st.text(alphabet="aé\udc80", max_size=8))


@settings(derandomize=True, max_examples=400, deadline=None)
@given(st.lists(st.one_of(short, st.integers(), st.none(), st.tuples(short, short)), max_size=8),
       st.integers(0, 10), st.integers(0, 120), st.booleans())
@example(["ab"], 5, 6, True)      # '["ab"]' is 6 bytes: the loop's total is 7, over 6
def test_a_budgeted_list_measured_whole_is_what_the_item_by_item_loop_gives(
        seq: list[Any], items: int, budget: int, clip: bool) -> None:
    """Within its count and budget the list is encoded and measured once; over either,
    or with an item the codec refuses, the loop decides, with the same clippings."""
    meta = {"items": items, "budget": budget, "chars": 6}
    for tp in (list[str], list[tuple[str, str]], list[int]):
        fast, full = codec._Enc(clip=clip), _FullEnc(clip=clip)
        fast.clipped, full.clipped = {"before": 1}, {"before": 1}
        assert _outcome(lambda: fast.value(tp, seq, meta, "x")) == \
            _outcome(lambda: full.value(tp, seq, meta, "x"))
        assert fast.clipped == full.clipped
