"""What counts as a JSON value here, checked strictly.

Workflow stores cross a process boundary as JSON. Checking values when they
enter (not when they are serialised, far from the action that put them) gives
the action author an error at the line that caused it, and refusing anything
JSON would silently change (tuples becoming lists, NaN, non-str keys) is what
keeps "an int stays an int" true on both sides of the boundary.
"""
from __future__ import annotations

import copy
import math
from typing import Any

_NOT_FINITE = "is not a finite number (JSON has no NaN or Infinity)"


def json_problem(value: Any, path: str = "") -> str | None:
    """Describe why `value` is not a JSON value, or return None if it is one.

    `path` names where `value` sits (``store.items[2]``); the description
    names the innermost offending spot so nested mistakes are easy to find.
    Cycles are reported rather than recursing forever.
    """
    return _problem(value, path, set())


def _problem(value: Any, path: str, seen: set[int]) -> str | None:
    where = path or "value"
    kind = type(value)
    # Exact types on purpose: an IntEnum or a str subclass would come back
    # from JSON as a plain int/str, i.e. not the value that was put.
    if value is None or kind in (bool, str, int):
        return None
    if kind is float:
        if math.isfinite(value):
            return None
        return f"{where}: {value!r} {_NOT_FINITE}"
    if kind in (list, dict):
        if id(value) in seen:
            return f"{where}: contains itself (cyclic structure)"
        seen.add(id(value))
        try:
            if kind is list:
                for i, item in enumerate(value):
                    found = _problem(item, f"{path}[{i}]", seen)
                    if found:
                        return found
                return None
            for key, item in value.items():
                if not isinstance(key, str):
                    return (f"{where}: object key {key!r} is a {type(key).__name__}; "
                            "JSON object keys must be strings")
                found = _problem(item, f"{path}.{key}" if path else key, seen)
                if found:
                    return found
            return None
        finally:
            seen.discard(id(value))
    hint = " (use a list)" if isinstance(value, (tuple, set, frozenset)) else ""
    return (f"{where}: {kind.__name__} is not a JSON value{hint}; "
            "use str, int, float, bool, None, list or dict with str keys")


def check_json(value: Any, path: str = "") -> None:
    """Raise TypeError (or ValueError for NaN/Infinity) unless `value` is JSON."""
    problem = json_problem(value, path)
    if problem is None:
        return
    if _NOT_FINITE in problem:
        raise ValueError(problem)
    raise TypeError(problem)


def copy_json(value: Any) -> Any:
    """Deep copy of a JSON value, so a store never shares lists with callers."""
    if isinstance(value, (list, dict)):
        return copy.deepcopy(value)
    return value
