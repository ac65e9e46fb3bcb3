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
another. The table lets go of a value once no run holds it (`_prune`), and is
bounded (`TABLE_MAX`): past it, it starts again, which costs only sharing.
`share` is used by the host's loop thread alone (runspec.build_context), or
before a fork. Its table is a `Table`; the audit holds its verdict and record
keys in tables of their own (sandbox/audit/verdicts.py, writer.py), which
several threads use (see `Table`).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, TypeVar

T = TypeVar("T")

TABLE_MAX = 4096

PRUNE_FIRST = 256



def share(value: T) -> T:
    """`value`, or the equal value already held: see the module's docstring."""
    return _share(value)[0]   # type: ignore[no-any-return]


# What `_share` says of the value it returns (a container's is its worst part's):
HELD = 0      # the one copy (a string interned, a scalar, a value found or just held)
NEW = 1       # immutable, but holds a part first seen now: not held (see `_share`)
MUTABLE = 2   # holds something mutable: the run's own, never held


def _share(value: Any) -> tuple[Any, int]:
    """(the value to keep, MUTABLE, HELD or NEW). A container with a part first seen now
    (a run's own directory) cannot be in the table, and is not put there: no lookup,
    no hash of it, no entry that only its run would use. It is held the next time it
    is seen whole, when its parts are all held."""
    kind = type(value)
    if kind is str:
        return _intern(value), HELD
    if kind in _SCALARS:
        return value, HELD
    if kind is tuple:
        names = None
        values: Any = value
    else:
        names = _names(kind)
        if names is None:
            return value, MUTABLE
        values = [getattr(value, n) for n in names]
    parts = []
    worst = HELD
    for v in values:   # (strings and scalars inline: most parts are; a call each was half
        t = type(v)    # the cost of a run's policy and plan)
        if t is str:
            parts.append(_intern(v))
        elif t in _SCALARS:
            parts.append(v)
        else:
            p, st = _share(v)
            parts.append(p)
            worst = max(worst, st)
    if worst == HELD:
        return _held(kind, parts, names)
    same = all(p is v for p, v in zip(parts, values))
    out = value if same else tuple(parts) if names is None else kind(*parts)
    return out, worst


_SCALARS = (int, bool, float, type(None))
_intern = sys.intern

_shapes: dict[type, tuple[str, ...] | None] = {}


def _names(kind: type) -> tuple[str, ...] | None:
    """A frozen dataclass's fields, in the order its __init__ takes them positionally;
    None for any other type, or one whose __init__ does not take every field so."""
    try:
        return _shapes[kind]
    except KeyError:
        pass
    names = None
    if dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        fields = dataclasses.fields(kind)
        if all(f.init and not f.kw_only for f in fields):
            names = tuple(f.name for f in fields)
    _shapes[kind] = names
    return names


def _held(kind: Any, parts: list[Any], names: tuple[str, ...] | None) -> tuple[Any, int]:
    """The held value of `kind` made of `parts` (each held): (it, HELD) when found, else
    (it, NEW), held from now. The table's key is the value itself (no key of its own to
    keep), so an equal value of other types would match (True == 1, but a rule's `True`
    must stay a bool): a match is taken only when each part is the very same held
    object, or a scalar of the same type; otherwise the value is this run's own."""
    value = tuple(parts) if names is None else kind(*parts)
    got = _table.get(value)
    if got is None:
        _host.hold(value)
        return value, NEW
    held = got if names is None else [getattr(got, n) for n in names]
    if all(h is p or (type(h) is type(p) and type(p) in _SCALARS) for h, p in zip(held, parts)):
        return got, HELD
    return value, NEW


def _alone() -> int:
    """The reference count `Table.prune` reads of a value held by a table alone (its key
    and value, the snapshot's item, the loop's name, getrefcount's argument), measured
    here the way `prune` reads it rather than assumed."""
    table = {}
    probe = (object(),)
    table[probe] = probe
    del probe
    return max(sys.getrefcount(k) for k in list(table))


_ALONE = _alone()


class Table:
    """Values held once, each for as long as something outside the table holds it too.

    `hold(value)` returns the equal value already held, or holds `value`. Equality
    is the dict's: only for values whose equal ones may stand for each other (the
    audit's record and verdict keys, which dicts already fold by that equality).
    `share` adds the type checks a policy needs on top of its own table.

    WHY NO LOCK: several threads use the audit's tables (the hub, the writer's
    thread, a run's close), and the broker child, forked from the host while they
    run, uses the verdicts' (tests/test_broker_fork_safety.py: a lock another thread
    held at the fork stays held there for ever). Each step is one dict operation on
    keys hashed and compared in C (tuples of strings, booleans and None), so atomic
    under the GIL; `prune` reads a snapshot. A race costs only sharing: two equal
    values both kept, or one dropped from the table while a caller takes it."""

    __slots__ = ("held", "prune_at")

    def __init__(self) -> None:
        self.held: dict[Any, Any] = {}
        self.prune_at = PRUNE_FIRST

    def hold(self, value: T) -> T:
        got = self.held.get(value)
        if got is not None:
            return got  # type: ignore[no-any-return]
        if len(self.held) >= self.prune_at:
            self.prune()
        return self.held.setdefault(value, value)  # type: ignore[no-any-return]

    def prune(self) -> None:
        """Drop the values nothing else holds any more (the table's reference is their
        only one), then the parts only they held, and so on: a run's own values go soon
        after the run. Next time when the table has doubled (amortised: each value is
        looked at a bounded number of times); past TABLE_MAX, it starts again."""
        held = self.held
        while True:
            dead = [k for k in list(held) if sys.getrefcount(k) <= _ALONE]
            if not dead:
                break
            for k in dead:
                held.pop(k, None)
            del dead, k   # (the list holds the dropped values, and so their parts: let go first)
        if len(held) >= TABLE_MAX:
            held.clear()
        self.prune_at = max(PRUNE_FIRST, 2 * len(held))


_host = Table()          # the host loop's: `share`
_table = _host.held
_prune = _host.prune
