"""runspec.shared_strings: the same JSON value back, with every string in it (keys,
values, list items, at any depth) the interned one."""
from __future__ import annotations

import sys
from typing import Any

from hypothesis import given, settings, strategies as st

from sandbox.monitor.runspec import shared_strings

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=4), inner, max_size=4)),
    max_leaves=25)


def _strings(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [s for x in v for s in _strings(x)]
    if isinstance(v, dict):
        return [s for k, x in v.items() for s in [k, *_strings(x)]]
    return []


@settings(derandomize=True, max_examples=300, deadline=None)
@given(json_values)
def test_the_same_value_with_every_string_interned(value: Any) -> None:
    # strings built at run time, as the JSON decoder builds them: not interned yet
    fresh = __import__("json").loads(__import__("json").dumps(value))
    out = shared_strings(fresh)
    assert out == value
    assert all(sys.intern(s) is s for s in _strings(out))
