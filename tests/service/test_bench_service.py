"""`sandbox bench --service --quick` runs to the end, reports both ways and both
targets, and leaves no server behind. It asserts nothing about speed (figures:
docs/benchmarks.md); it keeps the benchmark from rotting."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import processes_with

pytestmark = pytest.mark.slow


def test_bench_service_quick_reports_both_ways(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "bench", "--service", "--quick",
                        "--runs", "3", "--json"], cwd=tmp_path,
                       env={**os.environ, "SANDBOX_HOME": str(tmp_path / "home")},
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout)
    assert res["latency"]["direct"]["runs"] == res["latency"]["api"]["runs"] == 3
    assert res["runs_per_s"]["api"] > 0 and res["runs_per_s"]["direct"] > 0
    assert [t["target"] for t in res["targets"]] == ["HTTP overhead at p50 (API - direct)",
                                                    "API throughput / direct"]
    assert processes_with("sandbox-bench-service-") == []
