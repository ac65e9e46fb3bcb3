"""The codec: a message to JSON-ready values and back, exactly of its shape.

`encode` never fails on a well-typed message and never exceeds `max_size(cls)`:
what does not fit is clipped, and each clipping is counted in the message's
``clipped`` field. `decode` accepts exactly the shape: unknown or missing fields, a
wrong type, a string or list over its bound, a non-finite number all raise
ProtocolError."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import TYPE_CHECKING, Any, TypeVar, Union

from sandbox.errors import ProtocolError
from sandbox.ipc.frames import json_bytes, parse_json
from sandbox.jsontypes import JSONObject
from sandbox.protocol.bounds import DEFAULT_CHARS, DEFAULT_ITEMS, INT_MAX, INT_MIN, is_json

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ['to_obj', 'encode', 'from_obj', 'build', 'decode', 'max_size']

T = TypeVar("T")


# -- the codec ---------------------------------------------------------------------
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a message class, resolved once per class: resolving
    evaluates every annotation string each time (a few ms per run, on every decode).
    Every message's are resolved before the template is forked (`resolve_all`), so
    that a process forked from it resolves none: each resolution builds ForwardRefs and walks
    typing's caches, and in a fork every object it touches copies a page of the
    template (issue 14: ~0.2 MiB per spare stub decoding its Spec)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


# What the codec asks of a type, asked once per type (typing.get_origin, get_args,
# dataclasses.is_dataclass, the Optional unwrapping) and of a message class once per class
# (its fields, their hints and bounds): every message of every run walked typing's
# introspection for each value it held, about a third of the monitor host's CPU per run.
# Filled for every message before the template is forked (`resolve_all`), so its forks
# share them and fill nothing.
_DC, _JSON, _BOOL, _INT, _FLOAT, _STR, _LIST, _TUPLE, _DICT, _OTHER = range(10)
_KINDS: dict[Any, tuple[Any, bool, int, tuple[Any, ...]]] = {}
_FIELDS: dict[type, tuple[tuple[str, Any, dict[str, Any]], ...]] = {}


def _kind(tp: Any) -> tuple[Any, bool, int, tuple[Any, ...]]:
    """(the type without Optional, whether it was Optional, its kind, its type arguments)."""
    got = _KINDS.get(tp)
    if got is not None:
        return got
    base, optional = _unwrap_optional(tp)
    origin, args = typing.get_origin(base), typing.get_args(base)
    kind = (_DC if dataclasses.is_dataclass(base) else _JSON if is_json(base)
            else _BOOL if base is bool else _INT if base is int else _FLOAT if base is float
            else _STR if base is str else _LIST if origin is list
            else _TUPLE if origin is tuple else _DICT if origin is dict else _OTHER)
    got = _KINDS[tp] = (base, optional, kind, args)
    return got


def _fields(cls: type) -> tuple[tuple[str, Any, dict[str, Any]], ...]:
    """A message class's (name, resolved type, bounds) per field, in order."""
    got = _FIELDS.get(cls)
    if got is None:
        hints = _hints(cls)
        got = _FIELDS[cls] = tuple((f.name, hints[f.name], dict(f.metadata))
                                   for f in dataclasses.fields(cls))
        _WITH_KINDS[cls] = tuple((name, hint, meta, _kind(hint)[2])
                                 for name, hint, meta in got)
    return got


_WITH_KINDS: dict[type, tuple[tuple[str, Any, dict[str, Any], int], ...]] = {}


def _with_kinds(cls: type) -> tuple[tuple[str, Any, dict[str, Any], int], ...]:
    """`_fields(cls)` with each field's kind (`_kind`) as a fourth item, made once per
    class with the fields: the codec's loops over a message's fields ask nothing per
    field."""
    got = _WITH_KINDS.get(cls)
    if got is None:
        _fields(cls)
        got = _WITH_KINDS[cls]
    return got


def _plain(kind: int, x: Any, meta: dict[str, Any]) -> bool:
    """Whether `_Enc.value` returns `x` itself, unchecked and unclipped, for a field of
    this kind: an ASCII string within its bound, a bool, an int within 64 bits (exact
    types: a subclass takes the full path). Asked inline for each field of a message,
    it spares most of a spec's values (the mount table's steps and pairs) the call,
    the `where` string and the kind's branches: the launcher encodes each run's spec,
    and the monitor host encodes it again for the stub."""
    t = type(x)
    if t is str:
        return kind == _STR and x.isascii() and len(x) <= meta.get("chars", DEFAULT_CHARS)
    if t is bool:
        return kind == _BOOL
    return t is int and kind == _INT and INT_MIN <= x <= INT_MAX


class _Enc:
    """Turns a message into JSON-ready values, clipping to the bounds."""

    def __init__(self, clip: bool = True) -> None:
        self.clipped: dict[str, int] = {}
        self.may_clip = clip

    def clip(self, where: str, n: int, what: str) -> None:
        """Count `n` units cut from `where`; or, for a message that is never cut,
        refuse it, saying `what` is over which bound."""
        if not self.may_clip:
            raise ProtocolError(f"{where}: {what} (refused whole, never cut short)")
        self.clipped[where] = self.clipped.get(where, 0) + n

    def value(self, tp: Any, v: Any, meta: dict[str, Any], where: str) -> Any:
        tp, optional, kind, args = _kind(tp)
        if v is None:
            if optional:
                return None
            raise ProtocolError(f"{where}: None where {tp} is required")
        if kind == _DC:
            return self.obj(tp, v, where)
        if kind == _JSON:
            if not isinstance(v, dict):
                raise ProtocolError(f"{where}: want a JSON object")
            try:
                n = len(json_bytes(v))
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"{where}: not JSON: {exc}") from None
            if n > meta["budget"]:
                raise ProtocolError(f"{where}: {n} bytes of JSON, over its {meta['budget']}")
            return v
        if kind == _BOOL:
            return bool(v)
        if kind == _INT:
            n = int(v)
            if not INT_MIN <= n <= INT_MAX:
                self.clip(where, 1, "a number beyond 64 bits")
                n = max(INT_MIN, min(INT_MAX, n))
            return n
        if kind == _FLOAT:
            x = float(v)
            if not math.isfinite(x):
                self.clip(where, 1, "a number that is not finite")
                x = 0.0
            return x
        if kind == _STR:
            s = v if type(v) is str else str(v)   # surrogates kept: frames.json_bytes
            limit = meta.get("chars", DEFAULT_CHARS)
            if len(s) > limit:
                self.clip(where, len(s) - limit, f"{len(s)} characters, over its {limit}")
                s = s[:limit]
            return s
        items = meta.get("items", DEFAULT_ITEMS)
        if kind == _LIST:
            seq = list(v)
            budget = meta.get("budget")
            if budget is not None and len(seq) <= items:
                whole = self._whole_list(args[0], seq, meta, where, budget)
                if whole is not None:
                    return whole
            out: list[Any] = []
            used = 2
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
        if kind == _TUPLE:
            return [x if _plain(_kind(a)[2], x, meta) else
                    self.value(a, x, meta, f"{where}[{i}]")
                    for i, (a, x) in enumerate(zip(args, v, strict=True))]
        if kind == _DICT:
            pairs = list(dict(v).items())
            if len(pairs) > items:
                self.clip(where, len(pairs) - items,
                          f"{len(pairs)} entries, over its {items}")
                pairs = pairs[:items]
            d: dict[str, Any] = {}
            for k, x in pairs:
                d[self.value(str, k, meta, where + "{}")] = self.value(args[1], x, meta,
                                                                     where + "{}")
            return d
        raise TypeError(f"{where}: type {tp!r} has no wire form")

    def _whole_list(self, tp: Any, seq: list[Any], meta: dict[str, Any], where: str,
                    budget: int) -> list[Any] | None:
        """`seq` encoded whole and measured once, when that is what the item-by-item
        loop below would give: no item over the count, and the list's JSON within
        `budget` (the loop's running total at its end is that JSON's length plus one:
        compact separators). None otherwise, with nothing counted as clipped: the loop
        then does it item by item (the mount table's steps and pairs were each
        serialized once more only to be measured)."""
        saved = dict(self.clipped)
        try:
            out = [self.value(tp, item, meta, where + "[]") for item in seq]
            if not out or len(json_bytes(out)) + 1 <= budget:
                return out
        except Exception:
            pass
        self.clipped = saved
        return None

    def obj(self, cls: Any, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, cls):
            raise ProtocolError(f"{where or cls.__name__}: {type(v).__name__} is not "
                                f"{cls.__name__}")
        out: dict[str, Any] = {}
        for name, hint, meta, kind in _with_kinds(cls):
            if name == "clipped" and not where:
                continue
            x = getattr(v, name)
            if _plain(kind, x, meta):   # what `value` would return as it is
                out[name] = x
                continue
            out[name] = self.value(hint, x, meta, f"{where}.{name}" if where else name)
        return out


def to_obj(msg: DataclassInstance) -> JSONObject:
    """The message as bounded JSON-ready values. A message with a ``clipped`` field
    (the exit report) is clipped to its bounds and the clippings counted there; any
    other message over a bound is a ProtocolError (a spec is never cut short)."""
    can_clip = any(f.name == "clipped" for f in dataclasses.fields(msg))
    enc = _Enc(clip=can_clip)
    out = enc.obj(type(msg), msg, "")
    if can_clip:
        clipped = {**getattr(msg, "clipped"), **enc.clipped}
        meta = dict(next(f for f in dataclasses.fields(msg) if f.name == "clipped").metadata)
        out["clipped"] = enc.value(dict[str, int], clipped, meta, "clipped")
    return out


def encode(msg: DataclassInstance) -> bytes:
    """One message as UTF-8 JSON, at most `max_size(type(msg))` bytes."""
    return json_bytes(to_obj(msg))


class _Dec:
    """Checks JSON values against a message's shape, exactly (`strict`), or, for
    `build` on the sending side, only the types: bounds are the encoder's job."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def value(self, tp: Any, v: Any, meta: dict[str, Any], where: str) -> Any:
        tp, optional, kind, args = _kind(tp)
        if v is None:
            if optional:
                return None
            raise ProtocolError(f"{where}: null is not allowed")
        if kind == _DC:
            return self.obj(tp, v, where)
        if kind == _JSON:
            if not isinstance(v, dict):
                raise ProtocolError(f"{where}: want a JSON object")
            return v     # strict JSON already (parse_json); the message's size bounds it
        if kind == _BOOL:
            if not isinstance(v, bool):
                raise ProtocolError(f"{where}: want a boolean")
            return v
        if kind == _INT:
            if isinstance(v, bool) or not isinstance(v, int) or not INT_MIN <= v <= INT_MAX:
                raise ProtocolError(f"{where}: want a 64-bit integer")
            return v
        if kind == _FLOAT:
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v):
                raise ProtocolError(f"{where}: want a finite number")
            return float(v)
        if kind == _STR:
            if not isinstance(v, str) or (self.strict
                                          and len(v) > meta.get("chars", DEFAULT_CHARS)):
                raise ProtocolError(f"{where}: want a string of at most "
                                    f"{meta.get('chars', DEFAULT_CHARS)} characters")
            return v
        items = meta.get("items", DEFAULT_ITEMS)
        if kind == _LIST:
            if not isinstance(v, list) or (self.strict and len(v) > items):
                raise ProtocolError(f"{where}: want a list of at most {items} items")
            return [self.value(args[0], x, meta, where + "[]") for x in v]
        if kind == _TUPLE:
            if not isinstance(v, (list, tuple)) or len(v) != len(args):
                raise ProtocolError(f"{where}: want a list of {len(args)} items")
            return tuple(self.value(a, x, meta, where) for a, x in zip(args, v))
        if kind == _DICT:
            if not isinstance(v, dict) or (self.strict and len(v) > items):
                raise ProtocolError(f"{where}: want an object of at most {items} items")
            return {self.value(str, k, meta, where): self.value(args[1], x, meta, where)
                    for k, x in v.items()}
        raise ProtocolError(f"{where}: type {tp!r} has no wire form")

    def obj(self, cls: Any, v: Any, where: str) -> Any:
        if not isinstance(v, dict):
            raise ProtocolError(f"{where or cls.__name__}: want an object")
        fields = _fields(cls)
        names = {name for name, _, _ in fields}
        unknown = set(v) - names
        if unknown:
            raise ProtocolError(f"{where or cls.__name__}: unknown field(s) "
                                f"{', '.join(sorted(map(repr, unknown)))[:200]}"
                                + ("" if self.strict else
                                   f" (add them to {cls.__name__} in sandbox/protocol/)"))
        missing = names - set(v)
        if missing and self.strict:
            raise ProtocolError(f"{where or cls.__name__}: missing field(s) "
                                f"{', '.join(sorted(missing))}")
        kw: dict[str, Any] = {}
        for name, hint, meta, kind in _with_kinds(cls):
            if name not in v:
                continue
            x = v[name]
            # what `value` accepts and returns as it is (exact types; a string's bound is
            # checked when strict): spared the call and the `where` string, as `_plain`
            t = type(x)
            if (t is str and kind == _STR
                    and not (self.strict and len(x) > meta.get("chars", DEFAULT_CHARS))) \
                    or (t is bool and kind == _BOOL) \
                    or (t is int and kind == _INT and INT_MIN <= x <= INT_MAX):
                kw[name] = x
                continue
            kw[name] = self.value(hint, x, meta, f"{where}.{name}" if where else name)
        return cls(**kw)


def from_obj(cls: type[T], obj: object) -> T:
    """A message from JSON values; ProtocolError unless `obj` has exactly its shape."""
    try:
        return typing.cast(T, _Dec().obj(cls, obj, ""))
    except RecursionError:
        raise ProtocolError(f"{cls.__name__}: nested too deeply") from None


def build(cls: type[T], obj: object) -> T:
    """A message from plain values on the sending side (e.g. a summary dict):
    types checked, absent fields defaulted, bounds left to `encode`."""
    return typing.cast(T, _Dec(strict=False).obj(cls, obj, ""))


def decode(cls: type[T], data: bytes) -> T:
    """A message from its JSON bytes (at most `max_size(cls)`), checked exactly."""
    if len(data) > max_size(cls):
        raise ProtocolError(f"{cls.__name__}: {len(data)} bytes, over its "
                            f"{max_size(cls)}-byte bound")
    return from_obj(cls, parse_json(data))


# -- the static bound ----------------------------------------------------------------
def _size(tp: Any, meta: dict[str, Any]) -> int:
    tp, optional, _, _ = _kind(tp)
    if dataclasses.is_dataclass(tp):
        n = max_size(typing.cast(type, tp))
    elif is_json(tp):
        n = meta["budget"]
    elif tp is bool:
        n = 5
    elif tp is int:
        n = 20
    elif tp is float:
        n = 24          # repr of a finite double: at most '-1.7976931348623157e+308'
    elif tp is str:
        n = 6 * meta.get("chars", DEFAULT_CHARS) + 2   # '\u001f' is the longest escape
    else:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        items = meta.get("items", DEFAULT_ITEMS)
        if origin is list:
            n = 2 + items * (_size(args[0], meta) + 1)
            if meta.get("budget") is not None:
                n = min(n, meta["budget"])
        elif origin is tuple:
            n = 2 + sum(_size(a, meta) + 1 for a in args)
        elif origin is dict:
            n = 2 + items * (_size(str, meta) + 1 + _size(args[1], meta) + 1)
        else:
            raise TypeError(f"type {tp!r} has no wire form")
    return max(n, 4) if optional else n


def max_size(cls: type) -> int:
    """The most bytes `encode` can produce for this message type."""
    return 2 + sum(len(name) + 4 + _size(hint, meta) for name, hint, meta in _fields(cls))
