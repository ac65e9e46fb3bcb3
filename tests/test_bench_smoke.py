"""`sandbox bench --quick` runs to the end and reports every target.

It measures and asserts nothing about speed (figures: docs/benchmarks.md);
this only keeps the benchmark itself from rotting as the core changes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

TARGETS = ("no-op action round trip", "sandbox exec -- /bin/true", "no-op actions per second",
           "IPC messages per second", "launcher memory per live sandbox",
           "proxied / direct loopback throughput", "proxy's added connect latency, p50")


def test_bench_quick_reports_every_target(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "bench", "--quick", "--runs", "2"],
                       cwd=tmp_path, env={**os.environ, "SANDBOX_HOME": str(tmp_path / "state")},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    for target in TARGETS:
        assert target in p.stdout, (target, p.stdout[-2000:])
