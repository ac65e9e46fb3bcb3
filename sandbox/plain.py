"""`asdict`: `dataclasses.asdict` with the same result, at a fraction of its CPU.

`dataclasses.asdict` looks up each object's fields through `fields()` and passes
every leaf, strings and numbers included, through `copy.deepcopy`. The
launcher turns the resolved policy, its plan and the result into plain values
on every run (the spec, the run history): about a quarter of its CPU per run
went there (docs/benchmarks.md, "Where a warm run's CPU goes"). Here the field
names are read once per class and immutable leaves are returned as they are;
anything else is still deep-copied, so the result equals `dataclasses.asdict`'s
(tests/test_plain.py checks them against each other).
"""
from __future__ import annotations

import copy
import dataclasses
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
