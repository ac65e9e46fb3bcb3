"""`python -m sandbox.bench.audit --decompose`: the C floor with each part of the audited
round trip added (notify_floor.c's switches), the measure docs/benchmarks-journal.md's "The
audit loop" decomposes the missed 0.7x target with."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from sandbox.bench import audit
from sandbox.bench.floor import build

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                                reason="no C compiler: the floor cannot be built")


def test_every_switch_of_the_floor_answers_every_open():
    """Each part runs the floor's child to the end with every open answered: a switch that
    broke the loop (a filter the child dies under, a Landlock domain that refuses PATH, a
    listener that never reaches the parent) fails here instead of printing a figure."""
    from sandbox.isolation import seccomp
    from sandbox.policy import load_policy
    floor = build()
    try:
        filt = os.path.join(os.path.dirname(floor.binary), "policy.bpf")
        pol = load_policy("strict")
        with open(filt, "wb") as f:
            f.write(seccomp.warm(pol.syscalls, "all", pol.network.mode))
        for key, opts in audit.PARTS.items():
            args = [a.format(filter=filt) for a in opts]
            p = subprocess.run([floor.binary, *args, "300", audit.TARGET],
                               capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, (key, p.stderr)
            seconds, answered = p.stdout.split()
            assert float(seconds) > 0
            assert int(answered) == 300 + 200, (key, p.stdout)   # the loop and its warm-up
        bad = subprocess.run([floor.binary, "--nonsense", "3", audit.TARGET],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "unknown option --nonsense" in bad.stderr
    finally:
        floor.close()


def test_decompose_reports_each_part_against_the_floor():
    # CPU figures are differences of two runs (n and n//5 opens): with 1000 opens and one
    # round, a busy machine made one of them 0 or less (CI, 2026-12-05)
    res = audit.decompose(n=4000, repeat=3)
    assert set(res["cpu_us_per_open"]) == set(audit.PARTS) == set(res["added_us"])
    assert res["added_us"]["floor"] == 0
    assert all(v > 0 for v in res["cpu_us_per_open"].values())
    assert all(v > 0 for v in res["opens_per_s"].values())


def test_the_decomposition_runs_from_the_command_line():
    p = subprocess.run([sys.executable, "-m", "sandbox.bench.audit", "--decompose", "500"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert '"loop + layers"' in p.stdout and '"added_us"' in p.stdout
