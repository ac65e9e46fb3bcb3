"""sandbox.plain.asdict gives what dataclasses.asdict gives (it replaces it on the run path)."""
from __future__ import annotations

import dataclasses
import enum
from collections import namedtuple
from typing import Any

from hypothesis import given, settings, strategies as st

from sandbox.launcher.result import RunResult, Status
from sandbox.plain import asdict
from sandbox.policy import load_policy
from sandbox.policy.plan import FsPlan, FsRule

Pair = namedtuple("Pair", "a b")


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Leaf:
    x: Any
    y: Any = None


@dataclasses.dataclass
class Node:
    leaf: Leaf
    items: Any
    mapping: Any


atoms = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.text(max_size=8), st.binary(max_size=8), st.just(Colour.RED),
                  st.just(Status.OK))
values = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=4),
        st.builds(Pair, inner, inner), st.builds(Leaf, inner, inner),
        ),
    max_leaves=20)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (a tuple stays a tuple)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(values, values, values)
def test_any_dataclass_tree_converts_as_dataclasses_does(x: Any, items: Any, mapping: Any) -> None:
    obj = Node(Leaf(x), items, {"k": mapping})
    assert _same(asdict(obj), dataclasses.asdict(obj))


def test_mutable_leaves_are_copied_not_shared() -> None:
    buf = bytearray(b"abc")
    obj = Leaf(buf, [buf])
    out = asdict(obj)
    assert out == dataclasses.asdict(obj)
    assert out["x"] is not buf and out["y"][0] is not buf


def test_the_run_path_objects_convert_as_before() -> None:
    pol = load_policy("strict")
    assert _same(asdict(pol), dataclasses.asdict(pol))
    plan = FsPlan(rules=(FsRule(path="/usr", read=True, rule="r"),), masks=("/x",))
    assert _same(plan.to_dict()["rules"], [dataclasses.asdict(r) for r in plan.rules])
    res = RunResult(run_id="r" * 32, status=Status.OK, timings={"a": 1.0}, hints=["h"])
    assert _same(res.to_dict(), dataclasses.asdict(res))


def test_a_class_or_plain_value_is_refused_as_by_dataclasses() -> None:
    for bad in (Leaf, 3, {"a": 1}):
        try:
            asdict(bad)
        except TypeError:
            continue
        raise AssertionError(f"{bad!r} accepted")


def _two_walks(obj: Any) -> Any:
    """`Policy.to_dict` as it was: `asdict`, then tuples to lists and mappings to dicts."""
    from collections.abc import Mapping

    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            return {k: conv(x) for k, x in v.items()}
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(obj).items()}


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.builds(Node, st.builds(Leaf, values, values), values, values))
def test_jsonable_is_asdict_then_the_json_conversion(node: Node) -> None:
    from sandbox.plain import jsonable
    assert _same(jsonable(node), _two_walks(node))


def test_policy_to_dict_is_what_it_was_for_every_builtin_policy() -> None:
    import os
    from sandbox.policy import default_variables, resolve
    from sandbox.policy.search import builtin_dir
    names = [f[:-5] for f in sorted(os.listdir(builtin_dir())) if f.endswith(".toml")]
    assert "strict" in names
    for name in names:
        pol = load_policy(name)
        for p in (pol, resolve(pol, default_variables("/tmp/w", "/tmp/o"))):
            assert _same(p.to_dict(), _two_walks(p)), name
