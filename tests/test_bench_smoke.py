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
           "proxied / direct loopback throughput", "proxy's added connect latency, p50",
           "the monitor host's own growth per live sandbox, exec'd program",
           "the monitor host's own growth per live sandbox, Python action")


@pytest.mark.slow
def test_bench_quick_reports_every_target(tmp_path):
    md = tmp_path / "run.md"
    p = subprocess.run([sys.executable, "-m", "sandbox", "bench", "--quick", "--runs", "2",
                        "--markdown", str(md)],
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
    # the same run as docs/benchmarks.md's tables: every target a row with its verdict
    rows = md.read_text().splitlines()
    for target in TARGETS:
        row = next((r for r in rows if r.startswith(f"| {target}")), None)
        assert row is not None, (target, rows[:40])
        assert row.rstrip(" |").split("|")[-1].strip(" *") in ("PASS", "MISS", "N/A"), row
    assert any(r.startswith("| 64 |") for r in rows), rows   # the concurrency level 64


def test_bench_markdown_renders_a_saved_run_and_refuses_what_is_not_one(tmp_path):
    from sandbox.bench.markdown import render
    from sandbox.bench.targets import evaluate
    run = {"machine": {"cpus": 2, "load": [0.1], "load_after": [0.2]},
           "round_trip": {"a": {"name": "bwrap", "median_ms": 4.1, "p95_ms": 5, "p99_ms": 6}},
           "throughput": [{"concurrency": 4, "sandbox_per_s": 40.0,
                           "cpu_ms_per_run": {"launcher": 5.0, "sandbox": 19.0}}],
           "memory": [{"concurrency": 50, "python_action_mib_per_sandbox": 5.9,
                       "exec_program_mib_per_sandbox": 0.9, "bwrap_mib_per_sandbox": 0.4},
                      {"concurrency": 64, "python_action_mib_per_sandbox": 5.6,
                       "python_action_alive": 54, "exec_program_alive": 64,
                       "exec_program_mib_per_sandbox": 0.8, "bwrap_mib_per_sandbox": 0.35}],
           "burst": {"size": 4, "rounds": 1, "policy": "strict", "hit_rate": 1.0, "samples": {
               "hit": {"name": "hit", "runs": 1, "median_ms": 9.0, "p95_ms": 9.0,
                       "p99_ms": 9.0, "times_ms": [9.0]}}}}
    run["targets"] = [t.to_dict() for t in evaluate(run)]
    text = render(run, "sandbox bench")
    # docs/benchmarks.md takes this text as it is, and its docs test refuses a fenced
    # block without a language (tests/test_docs_examples.py)
    fences = [line for line in text.splitlines() if line.startswith("```")]
    assert fences and fences[0::2] == ["```text"] * (len(fences) // 2), fences
    assert "| bwrap | 4.1 ms | 5 ms | 6 ms |" in text
    # sandboxes that were not all alive when their memory was read are counted as they were
    assert "| 4 | 5.0 | 19.0 | - |" in text
    assert "| 64 | 5.6 MiB (54 alive) | 0.8 MiB | 0.35 MiB |" in text
    # issue 14's targets are judged at 50 alive, the level it names
    assert "| memory per live sandbox, Python action, 50 alive (PSS) |" in text
    assert "| 5.9 MiB vs bwrap 0.4 MiB |" in text
    at64 = {**run, "memory": run["memory"][1:]}   # a run without it: its last level, as counted
    text64 = render({**at64, "targets": [t.to_dict() for t in evaluate(at64)]}, "sandbox bench")
    assert "| memory per live sandbox, Python action, 54 of 64 alive (PSS) |" in text64
    assert "| memory per live sandbox, exec'd program, 64 alive (PSS) |" in text64
    for t in run["targets"]:   # each target a row that ends with its own verdict
        row = next(r for r in text.splitlines() if r.startswith(f"| {t['name']} |"))
        assert row.endswith(f"| **{t['verdict']}** |" if t["verdict"] != "PASS" else "| PASS |")
    assert "N/A" in {t["verdict"] for t in run["targets"]}   # the audit was not measured
    saved = tmp_path / "run.json"
    saved.write_text(__import__("json").dumps(run))
    ok = subprocess.run([sys.executable, "-m", "sandbox.bench.markdown", str(saved)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout == text
    saved.write_text("[1, 2]")
    bad = subprocess.run([sys.executable, "-m", "sandbox.bench.markdown", str(saved)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


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
