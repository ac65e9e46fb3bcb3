"""One copy of each equal frozen value the monitor host keeps for its live runs.

WHY (issue 14: the host grows by at most 64 KiB per live run): the host parses
each run's policy and plan from its spec and keeps them for the run's whole
life (its limits, the audit's engine, the outputs' copy). Runs of one policy
differ only in their own directories, yet each held its own copy of every rule,
path and sub-policy: ~11 KiB per live run. `share` returns the copy already
held for an equal value, so a run keeps only what is its own.

Only immutable values are shared: strings (`sys.intern`), tuples, and frozen
dataclasses whose fields are all shareable, rebuilt from shared parts. A value
that holds anything else (a dict, a list) is rebuilt around it: that field stays
the run's own, the others are shared. What one run holds never changes under
another. The
table lets go of a value once no run holds it (`_prune`), and is bounded
(`TABLE_MAX`): past it, it starts again, which costs only sharing.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, TypeVar

T = TypeVar("T")

TABLE_MAX = 4096

PRUNE_FIRST = 256

_table: dict[Any, Any] = {}
_state = {"prune_at": PRUNE_FIRST}


def share(value: T) -> T:
    """`value`, or the equal value already held: see the module's docstring."""
    return _share(value)[0]   # type: ignore[no-any-return]


def _share(value: Any) -> tuple[Any, bool]:
    """(the value to keep, whether it is immutable all the way down: held and shared)."""
    kind = type(value)
    if kind is str:
        return sys.intern(value), True
    if kind in _SCALARS:
        return value, True
    if kind is tuple:
        got = [_share(v) for v in value]
        parts = [p for p, _ in got]
        if all(ok for _, ok in got):
            return _held(tuple, parts), True
        return tuple(parts), False
    if dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        fields = dataclasses.fields(kind)
        if not all(f.init for f in fields):
            return value, False
        names = [f.name for f in fields]
        got = [_share(getattr(value, n)) for n in names]
        parts = [p for p, _ in got]
        if all(ok for _, ok in got):
            return _held(kind, parts, names), True
        # a mutable field (a dict): this value is the run's own, its other fields shared
        return kind(**dict(zip(names, parts))), False
    return value, False


_SCALARS = (int, bool, float, type(None))


def _held(kind: Any, parts: list[Any], names: list[str] | None = None) -> Any:
    """The held value of `kind` made of `parts` (each already shared). The table's key is
    the value itself (no key of its own to keep), so an equal value of other types would
    match (True == 1, but a rule's `True` must stay a bool): a match is taken only when
    each part is the very same shared object, or a scalar of the same type."""
    value = tuple(parts) if names is None else kind(**dict(zip(names, parts)))
    got = _table.get(value)
    if got is None:
        if len(_table) >= _state["prune_at"]:
            _prune()
        _table[value] = value
        return value
    held = got if names is None else [getattr(got, n) for n in names]
    if all(h is p or (type(h) is type(p) and type(p) in _SCALARS) for h, p in zip(held, parts)):
        return got
    return value   # equal, not the same types: this run's own


def _alone() -> int:
    """The reference count `_prune` reads of a value held by a table alone (its key and
    value, the loop's name, getrefcount's argument), measured here rather than assumed."""
    table = {}
    probe = (object(),)
    table[probe] = probe
    del probe
    return max(sys.getrefcount(k) for k in table)


_ALONE = _alone()


def _prune() -> None:
    """Drop the values no run holds any more (the table's reference is their only one),
    then the parts only they held, and so on: a run's own values (its directories' rules)
    go soon after the run. Next time when the table has doubled (amortised: each value
    is looked at a bounded number of times); past TABLE_MAX, it starts again."""
    while True:
        dead = [k for k in _table if sys.getrefcount(k) <= _ALONE]
        if not dead:
            break
        for k in dead:
            del _table[k]
        del dead, k   # (the list holds the dropped values, and so their parts: let go first)
    if len(_table) >= TABLE_MAX:
        _table.clear()
    _state["prune_at"] = max(PRUNE_FIRST, 2 * len(_table))
