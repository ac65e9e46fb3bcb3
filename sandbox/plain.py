"""`asdict`: `dataclasses.asdict` with the same result, at a fraction of its CPU.

`dataclasses.asdict` looks up each object's fields through `fields()` and passes
every leaf, strings and numbers included, through `copy.deepcopy`. The
launcher turns the resolved policy, its plan and the result into plain values
on every run (the spec, the run history): about a quarter of its CPU per run
went there (docs/benchmarks-journal.md, "Where a warm run's CPU goes"). Here the field
names are read once per class and immutable leaves are returned as they are;
anything else is still deep-copied, so the result equals `dataclasses.asdict`'s
(tests/test_plain.py checks them against each other).

`jsonable` is `asdict` followed by the JSON-ready conversion `Policy.to_dict` made in a
second walk (tuples to lists, mappings to dicts), in one walk: the
launcher (the spec) and the monitor host (the audit store's copy of the policy) each
turn a resolved policy into plain values once per run.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from enum import Enum
from typing import Any

_ATOMS = (str, int, float, bool, bytes, type(None), Enum)
_NAMES: dict[type, tuple[str, ...]] = {}


def _names(cls: type) -> tuple[str, ...]:
    names = _NAMES.get(cls)
    if names is None:
        names = _NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def asdict(obj: Any) -> dict[str, Any]:
    """What `dataclasses.asdict(obj)` returns (TypeError for a non-dataclass, as it)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError("asdict() should be called on dataclass instances")
    return _inner(obj)  # type: ignore[no-any-return]


def _inner(obj: Any) -> Any:
    if isinstance(obj, _ATOMS):
        return obj
    cls = type(obj)
    if hasattr(cls, "__dataclass_fields__") and not isinstance(obj, type):
        return {name: _inner(getattr(obj, name)) for name in _names(cls)}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):      # a namedtuple
        return cls(*[_inner(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return cls(_inner(v) for v in obj)
    if isinstance(obj, dict):
        return cls((_inner(k), _inner(v)) for k, v in obj.items())
    return copy.deepcopy(obj)


def jsonable(obj: Any) -> dict[str, Any]:
    """What ``_conv(asdict(obj))`` gives (every tuple, namedtuples too, made a list and
    every mapping a dict; lists and what they hold left as `asdict` made them), in one
    walk instead of two (TypeError for a non-dataclass, as `asdict`)."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError("jsonable() should be called on dataclass instances")
    return _json(obj)  # type: ignore[no-any-return]


def _json(obj: Any) -> Any:
    """``_conv(_inner(obj))`` without building `_inner`'s result first."""
    if isinstance(obj, _ATOMS):
        return obj
    cls = type(obj)
    if hasattr(cls, "__dataclass_fields__") and not isinstance(obj, type):
        return {name: _json(getattr(obj, name)) for name in _names(cls)}
    if isinstance(obj, tuple):       # namedtuples too: the second walk made them lists
        return [_json(v) for v in obj]
    if isinstance(obj, list):        # kept as `_inner` made it: the second walk left lists
        return [_inner(v) for v in obj]
    if isinstance(obj, dict):
        return {_inner(k): _json(v) for k, v in obj.items()}
    return _conv(copy.deepcopy(obj))


def _conv(v: Any) -> Any:
    """`Policy.to_dict`'s former second walk: tuples to lists, mappings to dicts."""
    if isinstance(v, tuple):
        return [_conv(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _conv(x) for k, x in v.items()}
    return v
