"""Warm pools in the monitor host, judged by the kernel: the cgroup limits a run's own
programs read at /sys/fs/cgroup are its policy's, pooled or not, whatever ran before.

Attacks: fill a pool with one policy, then run another (other limits; or the same
limits from another file); fill a pool, then edit the policy file keeping its size and
mtime. A pooled sandbox serving the wrong run would show the first policy's limit.
"""
from __future__ import annotations

import os

import pytest

from sandbox.launcher.launcher import Launcher

# the run's own pids cgroup, as the kernel shows it in the view (v1, else v2)
READ = ["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || "
                    "cat /sys/fs/cgroup/unified/pids.max"]


@pytest.fixture
def launcher():
    with Launcher() as lau:
        yield lau


def _policy(path, processes):
    path.write_text(f'extends = ["default"]\n[limits]\nprocesses = {processes}\n')
    return str(path)


def _limit(launcher, policy):
    r = launcher.spawn(READ, policy=policy, capture_output=True)
    if not str(r.limits_applied.get("processes", "")).startswith("cgroup"):
        # only a cgroup's limit is written before the run is known (an rlimit is set by
        # PID 1 from the run's own spec): without one there is nothing a pool could get
        # wrong, and nothing to read
        pytest.skip(f"no pids cgroup can be made for this user: {r.limits_applied}")
    assert r.status == "ok", (r.reason, r.stderr)
    return int(r.stdout), r.pooled


def _fill(launcher, policy, runs=4):
    """Runs until one is served from the pool (the pool fills in the background)."""
    seen = []
    for _ in range(runs):
        seen.append(_limit(launcher, policy))
        if seen[-1][1]:
            return seen
    pytest.fail(f"no run of {policy} was served from its pool: {seen}")


def test_a_pool_never_serves_a_run_of_another_policy(launcher, tmp_path):
    a = _policy(tmp_path / "a.toml", 50)
    b = _policy(tmp_path / "b.toml", 60)
    assert all(limit == 51 for limit, _ in _fill(launcher, a))   # + the stub
    limit, pooled = _limit(launcher, b)
    assert (limit, pooled) == (61, False)
    assert all(limit == 61 for limit, _ in _fill(launcher, b))
    assert _limit(launcher, a)[0] == 51


def test_the_same_limits_from_another_file_are_another_pool(launcher, tmp_path):
    a = _policy(tmp_path / "a.toml", 50)
    _fill(launcher, a)
    twin = _policy(tmp_path / "twin.toml", 50)
    assert _limit(launcher, twin) == (51, False)


def test_an_edited_policy_file_never_gets_the_old_pool(launcher, tmp_path):
    p = tmp_path / "p.toml"
    _policy(p, 50)
    _fill(launcher, str(p))
    st = os.stat(p)
    _policy(p, 70)                                    # same length
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back
    assert _limit(launcher, str(p)) == (71, False)
    assert all(limit == 71 for limit, _ in _fill(launcher, str(p)))
