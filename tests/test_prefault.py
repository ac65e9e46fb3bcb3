"""sandbox.thin.prefault: a fork copies the pages it shares with its parent ahead of
time, and allocates nothing its parent had not touched."""
from __future__ import annotations

import os

from probes import syscalls as probe
from sandbox.thin import prefault


def _rollup() -> dict[str, int]:
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1]) * 1024
    return out


def _in_fork(fn) -> dict:
    how, value = probe.in_child(fn)
    assert how == "exit" and isinstance(value, dict), (how, value)
    return value


def test_a_fork_copies_what_it_shares_and_allocates_nothing_new():
    ballast = [os.urandom(64) for _ in range(100_000)]   # ~10 MiB the fork shares

    def measure() -> dict:
        before = _rollup()
        copied = prefault.prefault()
        after = _rollup()
        return {"copied": copied, "before": before, "after": after,
                "left": sum(n for _, n in prefault.shared_runs())}

    got = _in_fork(measure)
    before, after = got["before"], got["after"]
    assert len(ballast) == 100_000
    # the shared anonymous pages became this process's own...
    assert got["copied"] >= 8 << 20
    assert after["Private_Dirty"] - before["Private_Dirty"] >= 8 << 20
    assert got["left"] < 1 << 20          # (what the measuring itself made since)
    # ...and only those: nothing untouched was allocated (the resident size grows by
    # what the measuring allocates, not by the copy)
    assert after["Rss"] - before["Rss"] < 4 << 20


def test_shared_runs_are_page_aligned_and_inside_writable_private_mappings():
    def runs() -> dict:
        with open("/proc/self/maps") as f:
            areas = [(int(a, 16), int(b, 16), p) for a, b, p in
                     ((*line.split()[0].split("-"), line.split()[1]) for line in f)]
        return {"runs": list(prefault.shared_runs()), "areas": areas}

    got = _in_fork(runs)
    page = os.sysconf("SC_PAGE_SIZE")
    assert got["runs"]
    for addr, length in got["runs"]:
        assert addr % page == 0 and length % page == 0 and length > 0
        assert any(lo <= addr and addr + length <= hi and perms == "rw-p"
                   for lo, hi, perms in got["areas"])
