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


def _reference_mask(text: str, secrets: list[str]) -> str:
    """The one-position-at-a-time scan masking used before (longest secret first at
    each position): what any faster masking must give."""
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
    out, i, plain = [], 0, 0
    while i < len(text):
        for s in ordered:
            if text.startswith(s, i):
                out += [text[plain:i], "[secret]"]
                i = plain = i + len(s)
                break
        else:
            i += 1
    return "".join(out) + text[plain:]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abc.", min_size=1, max_size=5), min_size=1, max_size=12),
       st.text(alphabet="abc.\n", max_size=80))
def test_masking_agrees_with_the_longest_first_scan(secrets: list[str], text: str) -> None:
    from sandbox.service.streams import mask_text
    assert mask_text(text, secrets)[0] == _reference_mask(text, secrets)


def _c_calls(fn, *args) -> int:
    """How many C functions `fn(*args)` called: the work done for each character."""
    import sys
    n = 0

    def count(_frame, event, _arg):
        nonlocal n
        n += event == "c_call"
    sys.setprofile(count)
    try:
        fn(*args)
    finally:
        sys.setprofile(None)
    return n


def test_masking_work_does_not_grow_with_the_number_of_secrets() -> None:
    """Found by an attack probe (2026-12-06): 256 never-matching secrets and 1 MiB of
    stdout cost 30 s of the server's CPU, a Python loop over every secret at every
    character; four such runs held every executor slot for minutes."""
    from sandbox.service.streams import Secrets, mask_text
    one, many = Secrets(["zq0"]), Secrets([f"zq{i}" for i in range(256)])   # once a run
    for text in ("a" * 4096, "zq" * 2048, "zq9" * 1365):
        few, lots = _c_calls(mask_text, text, one), _c_calls(mask_text, text, many)
        # the same work, plus what each secret found costs (one mask each)
        assert lots <= few + 64 + 6 * text.count("zq9"), (text[:6], few, lots)
