"""The launcher's cache of source scans is bounded by what it holds, not by its count.

`static_check._SCANNED` keeps each scanned module's defined names for the
launcher's life, up to 256 files. A module a sandbox planted on a code path
(a class with a long name and 4,000 methods) gave ~1 MB of names, ~1.2 MB of
live objects per entry: 256 planted files, scanned over a few runs, ~300 MB
held by a long-lived launcher (the service's worker) after the runs (found by
an attack probe). Judged from live Python objects (tracemalloc) after
scanning 40 such files as nested requests would.
"""
from __future__ import annotations

import gc
import tracemalloc

from sandbox.workflow import source_scan, static_check


def _planted(tmp_path, i: int) -> str:
    """A class with a 200-character name and 4,000 methods: each method's dotted name
    repeats the class's, ~820 KB of names from a 70 KB source."""
    path = tmp_path / f"planted{i}.py"
    cls = "C" * 200
    path.write_text(f"class {cls}:\n" + "".join(f"    def m{k}(self): 0\n"
                                                  for k in range(4000)))
    return str(path)


def test_scan_cache_holds_a_bounded_amount(tmp_path):
    files = [_planted(tmp_path, i) for i in range(40)]
    static_check._SCANNED.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for f in files:
            got = static_check._scan(f)
            assert got.readable and f"{'C' * 200}.m1" in got.defined
            del got
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        static_check._SCANNED.clear()
    assert held < 2 * static_check.CACHE_BYTES, held
