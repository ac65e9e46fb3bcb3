"""A pooled sandbox's view built in two parts (sandbox/isolation/prebuilt.py).

A PID 1 pooled at the "view" level builds the policy's part of its view before
its run is known, and only the run's own steps once it is. What must hold,
judged from the host's side and from inside the sandbox:

- the two parts give the view a cold start gives (a model of mount stacking,
  over generated tables; and the mount table, the top directories, the /etc
  copies and the identity seen from inside a pooled run and a cold run);
- a pooled view is never served once the host moved under it: a bound
  directory replaced since is seen as it is now, not as the view bound it;
- a pooled view built for another plan is refused by PID 1 itself.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from sandbox.errors import SetupError
from sandbox.isolation import prebuilt
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.isolation.mount_steps import Prepared, Step
from sandbox.monitor.pool_stubs import ViewState, host_state
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan

# -- the split, against a model of mount stacking ---------------------------------------
NAMES = ("a", "b", "etc", "dev", "tmp", "home", "run", "w", "o")
RUN_DIRS = ("/run/r1", "/w", "/o/out")
KINDS = ("bind", "bind", "bind", "mask", "link", "output", "tmp", "dev", "proc")


def _path(parts: list[str]) -> str:
    return "/" + "/".join(parts)


paths = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map(_path) | \
    st.sampled_from(RUN_DIRS) | st.sampled_from([d + "/x" for d in RUN_DIRS])
steps = st.builds(lambda kind, path: Step(kind, path, path), st.sampled_from(KINDS), paths)


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _visible(order: list[Step], probe: str) -> Step | None:
    """What is seen at `probe` once `order` is done: the last mount made at or above it
    (a later mount above hides what was mounted below; a later one below sits on top)."""
    seen = None
    for st_ in order:
        if _under(probe, st_.path):
            seen = st_
    return seen


SYSTEM_STEPS = [Step("system", p, p) for p in prebuilt.SYSTEM]   # what the system view writes


@settings(max_examples=600, deadline=None)
@given(st.lists(steps, max_size=10))
def test_early_then_late_is_the_cold_view(table):
    """Cold: every step in order, then the system view. Pooled: the early steps, the
    system view, then the late ones. Whenever `split` agrees to split, every place
    shows what the cold view shows there."""
    got = prebuilt.split(table, RUN_DIRS)
    if got is None:
        return
    early, late = got
    assert [s for s in table if s in early or s in late] == table
    assert sorted(map(repr, early + late)) == sorted(map(repr, table))
    assert all(prebuilt.is_late(s, RUN_DIRS) for s in late)
    assert not any(prebuilt.is_late(s, RUN_DIRS) for s in early)
    cold = table + SYSTEM_STEPS
    pooled = early + SYSTEM_STEPS + late
    probes = {s.path for s in cold} | {s.path + "/x" for s in cold} | {"/"}
    for probe in probes:
        assert _visible(cold, probe) == _visible(pooled, probe), (probe, table)


def test_every_step_at_or_under_a_run_directory_is_late():
    table = [Step("bind", "/usr", "/usr"), Step("bind", "/w", "/w"),
             Step("link", "/w/lib", "x"), Step("output", "/o/out"), Step("tmp", "/tmp"),
             Step("mask", "/w/secret")]
    early, late = prebuilt.split(table, RUN_DIRS)
    assert early == [table[0], table[4]]
    assert late == [table[1], table[2], table[3], table[5]]


@pytest.mark.parametrize("table", [
    # a mask of the policy's over a late bind: done early it would be hidden by the bind
    [Step("bind", "/home", "/home"), Step("bind", "/w", "/w"), Step("mask", "/")],
    # a late step where the system view writes
    [Step("bind", "/usr", "/usr"), Step("bind", "/etc/w", "/etc/w")],
    # nothing early
    [Step("bind", "/w", "/w")],
])
def test_a_table_that_would_not_give_the_cold_view_is_not_split(table):
    dirs = RUN_DIRS + ("/etc/w",)
    assert prebuilt.split(table, dirs) is None


def test_pid1_refuses_a_run_whose_early_steps_differ(tmp_path):
    """The host compares first (pool_stubs); PID 1 is the last word: a run whose plan's
    early part is not the built one fails closed, and builds nothing."""
    done = prebuilt.Prebuilt(str(tmp_path / "root"), [Step("bind", "/usr", "/usr")])
    ctx = ContainContext(policy=Policy(), paths=RunPaths(str(tmp_path), "/w", "/o/out", ""),
                         fs_plan=FsPlan(), ipc_fd=-1, monitor_fd=-1)
    ctx.mount_table = Prepared(ctx.fs_plan, [Step("bind", "/opt", "/opt"),
                                             Step("output", "/o/out")], {})
    with pytest.raises(SetupError) as err:
        done.finish(ctx)
    assert err.value.layer == "mounts" and "another plan" in str(err.value)
    assert not os.path.exists(tmp_path / "root")


def test_a_pooled_view_is_fresh_only_while_the_host_is_as_it_was(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    st_ = os.stat(d)
    early = (Step("bind", str(d), str(d)),)
    now = host_state()
    vs = ViewState(early, now, [(str(d), st_.st_dev, st_.st_ino)])
    assert vs.fresh(early, now)
    assert not vs.fresh(early + (Step("mask", "/x"),), now)          # another plan
    assert not vs.fresh(early, (b"other mounts", now[1]))            # the mount table moved
    assert not vs.fresh(early, (now[0], now[1] + (None,)))           # an /etc source moved
    d.rename(tmp_path / "old")
    d.mkdir()                                                        # replaced since
    assert not vs.fresh(early, now)
    d.rmdir()
    d.symlink_to(tmp_path / "old")                                   # now a link to the old
    assert not vs.fresh(early, now)


# -- live runs ----------------------------------------------------------------------------
PROBE = ("cat /proc/self/mountinfo; echo ==; ls -lA --time-style=+ / /dev /tmp "
         "/sys/fs/cgroup; echo ==; cat /etc/passwd /etc/group /etc/hosts; id; pwd")


def _normal(text: str) -> list[str]:
    """mountinfo without what differs between two sandboxes of one policy: mount ids,
    device numbers, the run's own id in its output's path; sorted (the pooled view
    mounts the run's own directories last); /proc's link count (its processes) and the
    padding `ls` gives it."""
    mounts, rest = text.split("\n==\n", 1)
    out = []
    for line in mounts.splitlines():
        f = line.split()
        sep = f.index("-")
        out.append(" ".join([f[3], f[4], f[5], *f[6:sep], *f[sep + 1:]]))
    rest = re.sub(r"runs/[0-9a-f]{8,}", "runs/RUN", rest)
    # /proc's link count is its processes', and ls pads every line to the widest count
    rest = re.sub(r" +", " ", rest)
    rest = re.sub(r"\d+( \S+ \S+ 0 proc)$", r"N\1", rest, flags=re.M)
    return sorted(re.sub(r"runs/[0-9a-f]{8,}", "runs/RUN", m) for m in out) + [rest]


def _launcher_runs(env: dict[str, str], n: int, wd: str, script: str) -> str:
    code = f"""
import json, os, sys, time
from sandbox import Launcher
l = Launcher(capture_output=True)
out = []
for i in range({n}):
    r = l.spawn(["/bin/sh", "-c", {script!r}], policy="strict", workdir={wd!r})
    out.append({{"status": r.status, "reason": r.reason, "view": r.view_prebuilt,
                "stdout": r.stdout, "stderr": r.stderr}})
    time.sleep(0.3)   # the pool refills between runs
l.close()
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    import json
    return json.loads(p.stdout)


@pytest.mark.isolation
def test_a_pooled_runs_view_is_a_cold_runs_view(tmp_path):
    wd = str(tmp_path)
    pooled = _launcher_runs({}, 4, wd, PROBE)
    cold = _launcher_runs({"SANDBOX_SPARE": "0"}, 1, wd, PROBE)
    assert all(r["status"] == "ok" for r in pooled + cold), pooled + cold
    assert not cold[0]["view"]
    views = [r for r in pooled if r["view"]]
    assert views, "no run took a pooled view: " + repr([r["view"] for r in pooled])
    want = _normal(cold[0]["stdout"])
    for r in views:
        assert _normal(r["stdout"]) == want


def _pooled_then_changed(tmp_path, policy_text: str, target: str, change: str,
                         argv: tuple[str, ...] = ("/bin/cat",)) -> list:
    """Three runs of `argv target` (the pool fills and serves), then `change` (Python, on
    the host), then three more: [status, view_prebuilt, stdout, stderr] of each."""
    wd = tmp_path / "wd"   # not above the data: its binds are the policy's, made early
    wd.mkdir()
    pol = tmp_path / "pol.toml"
    pol.write_text('extends = ["strict"]\n' + policy_text)
    script = f"""
import json, os, shutil, time
from sandbox import Launcher
l = Launcher(capture_output=True)
out = []
argv = {list(argv)!r}
def run():
    r = l.spawn(argv + [{target!r}], policy={str(pol)!r}, workdir={str(wd)!r})
    out.append([r.status, r.view_prebuilt, r.stdout, r.stderr])
    time.sleep(0.3)   # the pool refills between runs
for i in range(3):
    run()
{change}
for i in range(3):
    run()
l.close()
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    import json
    return json.loads(p.stdout)


@pytest.mark.isolation
def test_a_directory_replaced_after_the_view_was_built_is_seen_as_it_is_now(tmp_path):
    """Attack on the pool's freshness: the caller's directory the policy binds is
    replaced between the pool's fill and the run. The run must see the new one."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("old\n")
    out = _pooled_then_changed(
        tmp_path, f'[filesystem]\nread = ["{data}"]\n', str(data / "f"),
        f"shutil.rmtree({str(data)!r}); os.mkdir({str(data)!r}); "
        f"open({str(data / 'f')!r}, 'w').write('new\\n')")
    assert [o[2] for o in out] == ["old\n"] * 3 + ["new\n"] * 3, out
    assert any(o[1] for o in out[:3]), out   # the pool served the first runs


def _denied_stat(tmp_path, name: str, change: str) -> list:
    """`_pooled_then_changed` of `stat -c "%s %a" data/<name>`, a policy reading data/
    and denying data/<name>, without audit: the engine's per-call check would refuse
    the path anyway; this judges the mount layer's own mask."""
    data = tmp_path / "data"
    return _pooled_then_changed(
        tmp_path, f'[filesystem]\nread = ["{data}"]\ndeny = ["{data}/{name}"]\n'
                  '[audit]\nfiles = "none"\n',
        str(data / name), change, argv=("/usr/bin/stat", "-c", "%s %a"))


@pytest.mark.isolation
def test_a_masked_file_replaced_after_the_view_was_built_stays_masked(tmp_path):
    """Attack on the pool's masks: a mask is mounted on the masked file, and the kernel
    detaches a mount whose dentry is unlinked in another namespace; a file renamed over
    the masked one (as `passwd` writes /etc/shadow) would show through a view built
    before it: its size, owner and times by `stat` (its content stays refused by the
    policy's other layers). Every run must see the mask: an empty file of mode 0."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret").write_text("old secret\n")
    out = _denied_stat(tmp_path, "secret",
                       f"open({str(data / 'new')!r}, 'w').write('a new secret\\n'); "
                       f"os.replace({str(data / 'new')!r}, {str(data / 'secret')!r})")
    assert [o[2] for o in out] == ["0 0\n"] * 6, out
    assert any(o[1] for o in out[:3]), out


@pytest.mark.isolation
def test_a_denied_file_made_after_the_view_was_built_is_masked(tmp_path):
    """A deny of a file that did not exist when the pool filled (no mask then: masks
    only what is there): once the host makes it, a run must see it masked."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("public\n")
    out = _denied_stat(tmp_path, "later",
                       f"open({str(data / 'later')!r}, 'w').write('a later secret\\n')")
    assert [o[0] for o in out[:3]] == ["error"] * 3, out        # not there yet
    assert [o[2] for o in out[3:]] == ["0 0\n"] * 3, out       # then masked
    assert any(o[1] for o in out[:3]), out


@pytest.mark.isolation
def test_a_file_added_beside_a_denied_one_after_the_pool_filled_is_read(tmp_path):
    """A pooled view's Landlock rules are made with it, and a directory holding a
    denied file is granted entry by entry as it was listed then: a file the host adds
    there after the pool filled must be read as a cold run reads it (the host compares
    the directory's stamp before serving the sandbox), while the denied file stays
    refused. Outside /tmp: Landlock grants the private /tmp, with what is bound
    beneath it, whole."""
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="sandbox-pool-", dir="/var/tmp")
    try:
        os.chmod(top, 0o755)
        data = os.path.join(top, "data")
        os.mkdir(data)
        for name, text in (("secret", "secret\n"), ("f", "f\n")):
            with open(os.path.join(data, name), "w") as f:
                f.write(text)
        out = _pooled_then_changed(
            tmp_path, f'[filesystem]\nread = ["{data}"]\ndeny = ["{data}/secret"]\n'
                      '[audit]\nfiles = "none"\n', os.path.join(data, "later"),
            f"open({os.path.join(data, 'later')!r}, 'w').write('later\\n')")
    finally:
        shutil.rmtree(top)
    assert [o[2] for o in out] == [""] * 3 + ["later\n"] * 3, out
    assert any(o[1] for o in out[:3]) and any(o[1] for o in out[3:]), out   # pooled runs
