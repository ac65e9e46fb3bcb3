"""`sandbox bench --quick` runs to the end and reports every target.

It measures and asserts nothing about speed (figures: docs/benchmarks.md);
this only keeps the benchmark itself from rotting as the core changes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


TARGETS = ("no-op Python action round trip vs bwrap", "no-op actions per second at concurrency 4",
           "sandbox exec -- /bin/true, warm server", "sandbox exec -- /bin/true, cold",
           "audited opens per second vs a minimal C notify loop", "throughput at 64 concurrent",
           "p99 latency at 64 concurrent", "memory per live sandbox, exec'd program",
           "memory per live sandbox, Python action", "IPC messages per second",
           "proxied / direct loopback throughput", "proxy's added connect latency, p50")


@pytest.mark.slow
def test_bench_quick_reports_every_target(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "bench", "--quick", "--runs", "2"],
                       cwd=tmp_path, env={**os.environ, "SANDBOX_HOME": str(tmp_path / "state")},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    lines = p.stdout.splitlines()
    # the burst rows (issue 15.1): pooled runs (hits and/or misses), pools off, bwrap
    assert any(ln.startswith("bursts of 4 runs at once") for ln in lines), p.stdout[-3000:]
    assert any("pools off (SANDBOX_SPARE=0)" in ln for ln in lines), p.stdout[-3000:]
    for target in TARGETS:
        line = next((ln for ln in lines if target in ln), None)
        assert line is not None, (target, p.stdout[-2000:])
        verdict = line.split()[0]
        assert verdict in ("PASS", "MISS", "N/A"), line
        if verdict == "N/A":   # only with the reason printed
            assert line.rstrip().endswith(")") and "(" in line, line


def test_bench_rejects_bad_runs(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "bench", "--runs", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_targets_verdicts():
    """PASS/MISS follow the direction of each goal; a missing figure is N/A, never PASS."""
    from sandbox.bench.targets import Target, evaluate
    assert Target("a", "<= 1x", "", 0.9, 1.0, False).verdict == "PASS"
    assert Target("a", "<= 1x", "", 1.1, 1.0, False).verdict == "MISS"
    assert Target("a", ">= 0.7x", "", 0.69, 0.7, True).verdict == "MISS"
    assert Target("a", ">= 0.7x", "", None, 0.7, True).verdict == "N/A"
    assert {t.verdict for t in evaluate({})} == {"N/A"}
