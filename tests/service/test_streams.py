"""Secret masking of streamed output holds however the output is cut into chunks."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from sandbox.service.streams import OutputStream


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["ab", "abc", "x", "a", "b", "c", "\n", "é", "abcab"]),
                max_size=30),
       st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=40))
def test_no_chunking_reveals_a_secret(pieces: list[str], cuts: list[int]) -> None:
    secrets = ["abcab", "bca"]
    data = "".join(pieces).encode()
    chunks, i, k = [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)]
        chunks.append(data[i:i + n])
        i, k = i + n, k + 1
    got: list[str] = []
    out = OutputStream(lambda _n, d: got.append(d["text"]), secrets)
    for c in chunks:
        out.feed("stdout", c)
    out.close()
    shown = "".join(got)
    # same text as masking the whole at once; no event holds a secret
    from sandbox.service.streams import mask
    assert shown == mask(data.decode(), sorted(secrets, key=len, reverse=True))
    assert not any(s in shown for s in secrets)
