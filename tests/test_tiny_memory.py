"""A policy's memory limit, however small, costs its own run only.

The compiled stub is a clone sharing the zygote's memory (CLONE_VM) until it
exec's the waiter, and it joins the run's memory cgroup before it forks PID 1.
The OOM killer, asked to free memory in that cgroup, chose the stub (its
memory is the zygote's, the largest there) and killed every process sharing
that memory: `sandbox exec --memory 1MiB -- true` killed the zygote, and with
it every stub and sandbox it had forked, other callers' runs included. The
stub is now a vfork, which the OOM killer never chooses.

A limit below `MEMORY_MIN` is also refused up front, with one line: nothing
starts under it. The first test lifts that floor, so that the OOM killer
meets the stub's window as a policy or a racing program could make it.
Judged from the host: the zygote is the same process after the tiny runs,
and a run in flight beside them ends ok.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from sandbox.errors import InputError
from sandbox.launcher.launcher import Launcher
from sandbox.policy import load_policy, model
from test_zygote_restart import _wait, _zygote

pytestmark = pytest.mark.isolation
SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")
TINY = (4096, 1 << 20, 2 << 20, 3 << 20, 4 << 20)


def _with_memory(size: int):
    pol = load_policy("strict")
    return pol.replace(limits=replace(pol.limits, memory=size))


def test_the_oom_killer_never_takes_the_zygote(monkeypatch):
    monkeypatch.setattr(model, "MEMORY_MIN", 0)
    with Launcher(capture_output=True) as launcher:
        assert launcher.spawn(["true"]).status == "ok"
        zygote = _zygote(launcher)
        beside = launcher.start(["sleep", "2"])
        results = [launcher.spawn(["true"], policy=_with_memory(size)) for size in TINY * 2]
        for size, r in zip(TINY * 2, results):
            assert "zygote" not in (r.reason or ""), (size, r.status, r.reason)
        if results[0].limits_applied.get("memory", "").startswith("cgroup"):
            # the OOM killer was asked to choose: its runs end on their own limit
            assert any(r.status == "limit_exceeded" and r.reason == "memory"
                       for r in results), [(r.status, r.reason) for r in results]
        # else an address-space limit (no memory cgroup for this user): no OOM killer
        assert _zygote(launcher) == zygote
        done = _wait(beside)
        assert done.status == "ok", (done.status, done.reason)
        assert launcher.spawn(["echo", "after"]).stdout == "after\n"


def test_a_limit_below_the_floor_is_one_clear_line(tmp_path):
    with pytest.raises(InputError, match="below the least a sandbox starts with"):
        Launcher(capture_output=True).spawn(["true"], policy=_with_memory(7 << 20))
    proc = subprocess.run([SANDBOX, "exec", "--memory", "1MiB", "--", "true"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 125
    assert proc.stderr.count("\n") == 1 and "8 MiB" in proc.stderr, proc.stderr
    pol = tmp_path / "tiny.toml"
    pol.write_text('extends = ["strict"]\n[limits]\nmemory = "4KiB"\n')
    proc = subprocess.run([SANDBOX, "policy", "check", str(pol)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{pol}:3: limits.memory" in proc.stderr, proc.stderr
    ok = subprocess.run([SANDBOX, "exec", "--memory", "8MiB", "--", "true"], cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
