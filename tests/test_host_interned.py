"""What the monitor host keeps of a live run's policy and plan: one copy of each part
runs share (sandbox.monitor.interned; issue 14: the host grows by at most 64 KiB per
live run).

What must hold, for any value: `share` returns an equal value of the same types all
the way down (a rule's `True` stays a bool, never an equal `1`); two equal immutable
values come back as one object once the first has been seen whole; anything mutable stays the run's own (a dict is never
handed to another run); and the table lets go of what no run holds any more.
"""
from __future__ import annotations

import dataclasses
import gc
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.monitor import interned, runspec
from sandbox.monitor.interned import share
from sandbox.policy import build_plan, default_variables, load_policy, resolve
from sandbox.protocol import Spec


@dataclasses.dataclass(frozen=True)
class Leaf:
    name: str
    flag: bool = False
    n: int = 0


@dataclasses.dataclass(frozen=True)
class Node:
    items: tuple[Any, ...] = ()
    extra: Any = None


@dataclasses.dataclass
class Mutable:
    v: int = 0


scalars = st.one_of(st.text(max_size=6), st.booleans(), st.integers(-3, 3), st.none(),
                    st.floats(allow_nan=False))
leaves = st.builds(Leaf, st.text(max_size=4), st.booleans(), st.integers(0, 2))
values = st.recursive(
    st.one_of(scalars, leaves),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.builds(Node, st.lists(inner, max_size=3).map(tuple), inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=2),
        st.builds(Mutable, st.integers(0, 3)),
    ),
    max_leaves=12)


def _typed(v: Any) -> Any:
    """`v` as a tree of (type, parts): equal only when types match all the way down."""
    if isinstance(v, tuple):
        return (tuple, tuple(_typed(x) for x in v))
    if dataclasses.is_dataclass(v):
        return (type(v), tuple(_typed(getattr(v, f.name)) for f in dataclasses.fields(v)))
    if isinstance(v, dict):
        return (dict, tuple((k, _typed(x)) for k, x in v.items()))
    return (type(v), v)


def _strings(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, tuple):
        return [s for x in v for s in _strings(x)]
    if dataclasses.is_dataclass(v) and not isinstance(v, Mutable):
        return [s for f in dataclasses.fields(v) for s in _strings(getattr(v, f.name))]
    return []


def _mutables(v: Any) -> list[Any]:
    if isinstance(v, (dict, Mutable)):
        return [v]
    if isinstance(v, tuple):
        return [m for x in v for m in _mutables(x)]
    if dataclasses.is_dataclass(v):
        return [m for f in dataclasses.fields(v) for m in _mutables(getattr(v, f.name))]
    return []


@settings(derandomize=True, max_examples=300, deadline=None)
@given(values, values)
def test_share_gives_an_equal_value_of_the_same_types_and_keeps_mutables_own(a, b):
    # (an equal value of other types already held, Node((), False) for Node((), 0), is
    # never taken, and then the value is not shared either: start from an empty table)
    interned._table.clear()
    # a container is held once its parts are (a part first seen now is a run's own, so
    # its container is not looked up): a value of depth d is whole after d sightings
    for _ in range(8):
        sa = share(a)
    sb = share(b)
    assert _typed(sa) == _typed(a) and _typed(sb) == _typed(b)
    # every string outside a mutable is the interned one: runs spelling a path alike hold
    # one copy of it, and a run's own strings go with it
    assert all(x is sys.intern(x) for x in _strings(sa) + _strings(sb))
    # a dict or a mutable object is the very one the run had, never another run's
    assert [id(m) for m in _mutables(sa)] == [id(m) for m in _mutables(a)]
    assert [id(m) for m in _mutables(sb)] == [id(m) for m in _mutables(b)]
    if not _mutables(a) and not _mutables(b) and _typed(a) == _typed(b) \
            and isinstance(a, (tuple, Leaf, Node)):
        assert sa is sb


def test_a_bool_and_an_equal_int_are_never_merged():
    t, one = share(Leaf("x", flag=True)), share(Leaf("x", flag=1))  # type: ignore[arg-type]
    assert t is not one and type(t.flag) is bool and type(one.flag) is int
    assert type(share((True,))[0]) is bool and type(share((1,))[0]) is int


def _context(i: int, base: str = "/nonexistent"):
    pol = resolve(load_policy("strict"), default_variables(f"{base}/w{i}", f"{base}/o{i}"))
    return runspec.build_context(Spec(run_id=f"r{i}", policy=pol.to_dict(),
                                      fs_plan=build_plan(pol).to_dict(), ipc_fd=3))


def test_runs_of_one_policy_share_all_but_their_own_directories(tmp_path):
    for d in ("w1", "o1", "w2", "o2"):
        (tmp_path / d).mkdir()
    a, b = _context(1, str(tmp_path)), _context(2, str(tmp_path))
    assert a.policy.limits is b.policy.limits and a.policy.syscalls is b.policy.syscalls
    assert a.policy.filesystem.deny is b.policy.filesystem.deny
    assert a.policy.env.set is not b.policy.env.set       # a dict: each run's own
    own = {r.path for r in a.fs_plan.rules} ^ {r.path for r in b.fs_plan.rules}
    assert own and all(p.startswith(str(tmp_path)) for p in own)
    shared = [r for r in a.fs_plan.rules if r.path not in own]
    twins = {r.path: r for r in b.fs_plan.rules}
    assert shared and all(twins[r.path] is r for r in shared)


def test_the_table_lets_go_of_what_no_run_holds():
    gc.collect()
    interned._prune()
    before = len(interned._table)
    held = [_context(i) for i in range(3 * interned.PRUNE_FIRST // 8)]
    grown = len(interned._table)
    assert grown > before                          # the runs' own parts were held
    del held
    gc.collect()
    interned._prune()
    assert len(interned._table) <= before + 8, (before, grown, len(interned._table))
