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


def _status_field(pid: int, name: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split()[1:]
    except OSError:
        pass
    return []


def _waiting_pid1s(server: int) -> set[int]:
    """Below the fork server: every PID 1 (first of its own PID namespace) whose parent
    is a stub already exec'd into the compiled waiter."""
    from sandbox import _native
    from sandbox.monitor.tree import children_map
    kids = children_map()
    below, todo = [], list(kids.get(server, []))
    while todo:
        pid = todo.pop()
        below.append(pid)
        todo.extend(kids.get(pid, []))
    waiting = set()
    for pid in below:
        parent = int((_status_field(pid, "PPid") or ["0"])[0])
        try:
            parent_exe = os.readlink(f"/proc/{parent}/exe")
        except OSError:
            continue
        if _status_field(pid, "NSpid")[-1:] == ["1"] and \
                os.path.realpath(parent_exe) == os.path.realpath(_native.INIT_PATH):
            waiting.add(pid)
    return waiting


def test_a_pooled_run_starts_in_a_pid1_that_was_waiting_before_it_was_asked(launcher):
    """A pooled sandbox's PID 1 is forked ahead (sandbox/sandboxee/stub.py): it waits for
    its spec in its own PID namespace, under a stub that is already the compiled
    waiter, and the run that takes the sandbox runs in that very process."""
    import time
    launcher.spawn(["true"])      # the fork server up, the default policy's pool made
    server = launcher.forkserver_pid
    assert server
    for _ in range(10):
        # the pool's stubs settled: the same ones waiting over three looks (a refill
        # begun by the previous run's end may still be starting one, which the run
        # could then take, ready by the time it is asked, without this look seeing it)
        deadline = time.monotonic() + 10
        seen: list[set[int]] = []
        while time.monotonic() < deadline:
            seen = (seen + [_waiting_pid1s(server)])[-3:]
            if len(seen) == 3 and seen[0] and seen[0] == seen[1] == seen[2]:
                break
            time.sleep(0.05)
        waiting = seen[-1] if seen else set()
        r = launcher.spawn(["true"])
        assert r.status == "ok", r.reason
        if r.pooled:
            assert r.pids["sandboxee"] in waiting, (r.pids, waiting)
            return
    pytest.fail("no run was served from its pool")
