"""`policy suggest` costs time linear in the records, and suggests what it suggested.

The attack (found by probing the landed main, 2026-12-06): the learned policy's
directory collapsing checked every directory against every used path and every
refused path. A run that opened 12,000 names of its choosing (missing names under
${WORKDIR} are recorded as allowed reads, so it needs no files) made one
`GET /v1/runs/{id}/policy/suggest` hold the service for minutes of CPU, and the
tenant could repeat it. The new collapsing is checked against the old one (kept
here as the oracle) on random trees, and on the crafted run's shape.
"""
from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given, settings, strategies as st

from sandbox.audit import suggest


def _old_under(path: str, prefix: str) -> bool:
    return path == prefix or prefix == "/" or path.startswith(prefix.rstrip("/") + "/")


def _old_collapse(paths, min_files, variables, refused=()):
    refused = set(refused)
    entries = set(paths)
    entries = {p for p in entries if not any(q != p and _old_under(p, q) for q in entries)}
    candidates = set()
    for p in entries:
        d = os.path.dirname(p)
        while d and d != "/":
            candidates.add(d)
            d = os.path.dirname(d)
    for d in sorted(candidates, key=lambda x: (-x.count("/"), x)):
        if suggest._protected(d, variables) or any(_old_under(r, d) for r in refused):
            continue
        inside = {p for p in entries if p != d and _old_under(p, d)}
        if len(inside) >= min_files:
            entries = (entries - inside) | {d}
    return sorted(entries)


segment = st.sampled_from(["a", "b", "c", "usr", "lib", "x"])
path = st.one_of(st.just("/"), st.lists(segment, min_size=1, max_size=5).map(
    lambda parts: "/" + "/".join(parts)))


@settings(max_examples=2000, deadline=None)
@given(st.sets(path, max_size=25), st.sets(path, max_size=4), st.integers(1, 4),
       st.sampled_from([{}, {"WORKDIR": "/a/b"}, {"OUTPUT": "/x"}]))
def test_collapsing_suggests_what_it_suggested(paths, refused, min_files, variables):
    assert suggest.collapse(paths, min_files, variables, refused) == \
        _old_collapse(paths, min_files, variables, refused)


@settings(max_examples=500, deadline=None)
@given(st.sets(path, max_size=12), st.sets(path, max_size=6), st.sets(path, max_size=6))
def test_a_read_under_an_exec_or_write_rule_is_dropped_as_before(reads, execs, writes):
    recs = ([{"verdict": "allowed", "operation": "read", "path": p} for p in reads]
            + [{"verdict": "allowed", "operation": "exec", "path": p} for p in execs]
            + [{"verdict": "allowed", "operation": "write", "path": p} for p in writes])
    wider = execs | writes
    want = {p for p in reads if not any(_old_under(p, q) for q in wider)}
    assert suggest.needed(recs)["read"] == want


CRAFTED = r"""
import sys
from sandbox.audit import suggest
n = int(sys.argv[1])
deep = ["/home/u/w/d%d/%s/f" % (i, "/".join(["e"] * 18)) for i in range(n)]
flat = ["/home/u/w/x/f%d" % i for i in range(n)]
refused = ["/home/u/w/r%d/z" % i for i in range(n)]
print(len(suggest.collapse(deep, 3, {"WORKDIR": "/home/u/w"}, refused)),
      len(suggest.collapse(flat, 3, {"WORKDIR": "/home/u/w"}, refused)))
"""


def test_the_crafted_run_is_learned_from_in_one_pass():
    """20,000 names 20 levels deep and 20,000 flat ones, with as many refused paths:
    the old collapsing needed hours for this (12,000 deep names took 42 s of server
    CPU per request); a hang past the generous bound fails the test."""
    r = subprocess.run([sys.executable, "-c", CRAFTED, "20000"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # deep: one chain per d<i>, and ${WORKDIR} holds refused paths: nothing collapses;
    # flat: all in x, which holds none
    assert r.stdout.split() == ["20000", "1"]
