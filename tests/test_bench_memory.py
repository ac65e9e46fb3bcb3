"""sandbox.bench.memory and .smaps: PSS and private pages per role, read from /proc."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from sandbox.bench import memory, smaps


def test_a_childs_written_pages_count_as_its_private_memory():
    # 16 MiB written by a child of this process: its role ("forkserver": a python
    # child of the root) holds at least that much private and PSS memory
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; b = b'x' * (16 << 20); "
                              "print(1, flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"1\n"
        t = memory.tally_sandbox_tree(os.getpid())
        assert t.sample.get("forkserver") is not None
        assert t.private["forkserver"] >= 16 << 10
        assert t.kib["forkserver"] >= 16 << 10     # private pages count whole in PSS
        where = smaps.private_by_mapping(child.pid)
        assert where.get("anon", 0) + where.get("heap", 0) >= 16 << 10
    finally:
        child.kill()
        child.wait()


def test_a_gone_process_reads_as_nothing():
    p = subprocess.Popen(["true"])
    p.wait()
    time.sleep(0.05)
    assert smaps.rollup(p.pid) == {} and smaps.pss_kib(p.pid) == 0
    assert smaps.private_by_mapping(p.pid) == {}


def test_the_fork_floor_counts_what_the_forked_worker_wrote():
    from sandbox.bench import fork_floor
    res = fork_floor.measure()
    assert set(res) == set(fork_floor.SCENARIOS)
    assert all(v > 0 for v in res.values())
    # running the worker writes (so copies) template pages that three bare forks do not
    assert res["worker"] > res["three_forks"]
