"""cgroup limits applied from outside: real cgroups as root, an honest report otherwise.

Which case applies is computed twice: by `probe()` and, independently here,
from /proc/self/cgroup, /proc/self/mountinfo and access(2); the two must
agree, so a probe that lies fails the suite instead of steering it.
"""
from __future__ import annotations

import errno
import os
import signal

import pytest

from sandbox.monitor import cgroups
from sandbox.policy.model import Limits

pytestmark = pytest.mark.isolation
MiB = 1 << 20


def _independent_bases() -> dict[str, str | None]:
    """controller -> writable directory under our own cgroup, or None (own computation)."""
    mounts: dict[str, str] = {}
    v2_mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, post = line.split(" - ")
            fstype, _, opts = post.split()[:3]
            point = fields.split()[4]
            if fstype == "cgroup2":
                v2_mount = point
            elif fstype == "cgroup":
                for o in opts.split(","):
                    mounts.setdefault(o, point)
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else ["<v2>"]):
                own[c] = path
    out: dict[str, str | None] = {}
    for c in ("memory", "pids"):
        out[c] = None
        if v2_mount and "<v2>" in own:
            d = v2_mount + own["<v2>"].rstrip("/")
            try:
                with open(os.path.join(d, "cgroup.controllers")) as f:
                    offered = c in f.read().split()
                with open(os.path.join(d, "cgroup.subtree_control")) as f:
                    enabled = c in f.read().split()
                with open(os.path.join(d, "cgroup.procs")) as f:
                    alone = set(f.read().split()) <= {str(os.getpid())}
            except OSError:
                offered = enabled = alone = False
            # usable: enabled for children, or enable-able because only we live here
            enableable = (alone or own["<v2>"] == "/") and os.access(
                os.path.join(d, "cgroup.subtree_control"), os.W_OK)
            if offered and (enabled or enableable) and os.access(d, os.W_OK):
                out[c] = d
                continue
        if c in mounts and c in own:
            d = mounts[c] + own[c].rstrip("/")
            if os.access(d, os.W_OK):
                out[c] = d
    return out


@pytest.fixture(scope="module")
def expected() -> dict[str, str | None]:
    return _independent_bases()


@pytest.fixture(scope="module")
def support() -> cgroups.CgroupSupport:
    return cgroups.probe()


def test_probe_agrees_with_independent_check(support, expected):
    for c in ("memory", "pids"):
        s = support.controllers[c]
        assert s.usable == (expected[c] is not None), (c, s, expected)
        if s.usable:
            assert s.base == expected[c]
            assert s.reason == ""
        else:
            assert "not writable" in s.reason or "not delegated" in s.reason
    if os.geteuid() != 0 and not any(expected.values()):
        assert not support.usable
        assert f"as uid {os.geteuid()}" in support.reason
        assert "not writable (EACCES)" in support.reason


def _fork(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            code = fn()
        except BaseException:
            code = 70
        os._exit(code)
    return pid


def test_memory_limit_oom_kills(support, expected):
    made, reason = cgroups.create_or_reason("t-oom", Limits(memory=64 * MiB), support=support)
    if expected["memory"] is None:
        assert made is None
        assert "memory" in reason and "not writable" in reason
        return
    assert made is not None and made.applied["memory"] in ("v1", "v2")
    assert "pids" not in made.applied   # no process limit: joined for accounting only
    with open(os.path.join(made.dirs["memory"][1], "memory.limit_in_bytes"
                           if made.applied["memory"] == "v1" else "memory.max")) as f:
        assert int(f.read()) == 64 * MiB
    try:
        r, w = os.pipe()

        def hog() -> int:
            made.join(0)
            os.write(w, b"joined")
            data = b"\x01" * (256 * MiB)   # touches every page
            return 0 if data else 1

        pid = _fork(hog)
        os.close(w)
        assert os.read(r, 16) == b"joined"
        os.close(r)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert made.oom_killed() is True
        peak = made.max_memory()
        assert peak is not None and 32 * MiB < peak <= 64 * MiB
        assert made.pids_limit_hit() is False
    finally:
        assert made.remove()
    assert not any(os.path.exists(p) for p in made.paths)
    assert made.oom_killed() is True   # snapshot survives removal


def test_memory_within_limit_not_oom(support, expected):
    if expected["memory"] is None:
        assert cgroups.create("t-fine", Limits(memory=64 * MiB), support=support) is None
        return
    made = cgroups.create("t-fine", Limits(memory=64 * MiB), support=support)
    assert made is not None
    try:
        pid = _fork(lambda: (made.join(0), len(b"\x01" * (8 * MiB)))[1] and 0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert made.oom_killed() is False
    finally:
        assert made.remove()


def test_pids_limit_and_kill_all(support, expected):
    made, reason = cgroups.create_or_reason("t-pids", Limits(processes=5), support=support)
    if expected["pids"] is None:
        assert made is None
        assert "pids" in reason and "not writable" in reason
        return
    assert made is not None and "pids" in made.applied and "memory" not in made.applied
    with open(os.path.join(made.dirs["pids"][1], "pids.max")) as f:
        assert f.read().strip() == "5"
    r, w = os.pipe()
    block_r, block_w = os.pipe()

    def forker() -> int:
        made.join(0)
        ok = 0
        while True:
            try:
                kid = os.fork()
            except OSError as exc:
                os.write(w, f"{ok} {exc.errno}".encode())
                break
            if kid == 0:
                os.setsid()          # escape the process group: only the cgroup still holds it
                os.read(block_r, 1)  # blocks until killed
                os._exit(0)
            ok += 1
            if ok > 50:
                os.write(w, b"50 0")
                break
        os.read(block_r, 1)
        return 0

    pid = _fork(forker)
    os.close(w)
    forked, err = (int(x) for x in os.read(r, 64).split())
    try:
        assert err == errno.EAGAIN
        assert forked == 4                      # the forker itself is the fifth task
        assert made.pids_limit_hit() is True
        assert len(made.procs()) == 5
        assert made.kill_all() is True
        assert made.procs() == set()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        assert made.remove()
        for fd in (r, block_r, block_w):
            os.close(fd)
    assert not any(os.path.exists(p) for p in made.paths)


def test_cleanup_stale(support, expected):
    if not support.usable:
        assert cgroups.cleanup_stale(support) == []
        return
    dead = _fork(lambda: 0)
    os.waitpid(dead, 0)
    base = next(expected[c] for c in ("pids", "memory") if expected[c])
    stale = os.path.join(base, f"sandbox-{dead}-1-planted")
    live = os.path.join(base, f"sandbox-{cgroups.owner_token()}-planted-live")
    os.mkdir(stale)
    os.mkdir(live)
    r, w = os.pipe()
    hold_r, _hold_w = os.pipe()

    def squatter() -> int:
        with open(os.path.join(stale, "cgroup.procs"), "w") as f:
            f.write("0")
        os.write(w, b"in")
        os.read(hold_r, 1)   # blocks until killed
        return 0

    pid = _fork(squatter)
    os.close(w)      # a child that dies before writing gives EOF, not a hang
    try:
        assert os.read(r, 2) == b"in"
        removed = cgroups.cleanup_stale(support)
        assert stale in removed and not os.path.exists(stale)
        assert live not in removed and os.path.isdir(live)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        for fd in (r, hold_r, _hold_w):
            os.close(fd)
        for d in (stale, live):
            if os.path.isdir(d):
                os.rmdir(d)


def test_cleanup_stale_kills_a_frozen_run(support):
    """A monitor killed inside kill_all (between FROZEN and THAWED) leaves its tasks
    frozen; a frozen task takes no SIGKILL until thawed, so cleanup must thaw it (it
    spun until its timeout on every base and left the task and its cgroups behind)."""
    fz = support.controllers.get("freezer")
    if fz is None or not fz.usable or fz.version != "v1":
        pytest.skip(f"no usable v1 freezer here: {getattr(fz, 'reason', 'not probed')}")
    dead = _fork(lambda: 0)
    os.waitpid(dead, 0)
    name = f"sandbox-{dead}-1-frozen{os.getpid()}"
    bases = {s.base for s in support.controllers.values() if s.usable and s.base}
    dirs = [os.path.join(b, name) for b in sorted(bases) if b]
    for d in dirs:
        os.mkdir(d)
    r, w = os.pipe()
    hold_r, hold_w = os.pipe()

    def squatter() -> int:
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write("0")
        os.write(w, b"in")
        os.read(hold_r, 1)   # blocks until killed
        return 0

    import time
    pid = _fork(squatter)
    os.close(w)
    frozen_dir = os.path.join(fz.base, name)
    try:
        assert os.read(r, 2) == b"in"
        with open(os.path.join(frozen_dir, "freezer.state"), "w") as f:
            f.write("FROZEN")
        removed = cgroups.cleanup_stale(support)
        deadline = time.monotonic() + 10
        got, status = os.waitpid(pid, os.WNOHANG)
        while got == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            got, status = os.waitpid(pid, os.WNOHANG)
        assert got == pid, "the stale run's frozen task is still alive after cleanup_stale"
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert frozen_dir in removed and not any(os.path.exists(d) for d in dirs)
    finally:
        if os.path.isdir(frozen_dir):
            with open(os.path.join(frozen_dir, "freezer.state"), "w") as f:
                f.write("THAWED")
        for fd in (r, hold_r, hold_w):
            os.close(fd)
        for d in dirs:
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def test_bad_run_id_is_a_bug():
    with pytest.raises(ValueError):
        cgroups.create("../escape", Limits(memory=MiB))


FAKE_MOUNTS = ("30 23 0:26 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")


def _fake_v2(tmp_path, subtree: str, procs: str) -> tuple[str, str]:
    own = tmp_path / "user.slice" / "app.scope"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text("cpu memory pids\n")
    (own / "cgroup.subtree_control").write_text(subtree)
    (own / "cgroup.procs").write_text(procs)
    return FAKE_MOUNTS.format(root=tmp_path), "0::/user.slice/app.scope\n"


def test_probe_prefers_delegated_v2(tmp_path):
    mountinfo, proc = _fake_v2(tmp_path, "memory pids\n", "")
    sup = cgroups.probe(proc_cgroup=proc, mountinfo=mountinfo)
    for c in ("memory", "pids"):
        assert sup.controllers[c].version == "v2"
        assert sup.controllers[c].base == str(tmp_path / "user.slice" / "app.scope")
        assert not sup.controllers[c].needs_enable
    assert list((tmp_path / "user.slice" / "app.scope").glob("sandbox-*")) == []


def test_probe_v2_enableable_only_without_foreign_processes(tmp_path):
    mountinfo, proc = _fake_v2(tmp_path, "", f"{os.getpid()}\n")
    sup = cgroups.probe(proc_cgroup=proc, mountinfo=mountinfo)
    assert sup.controllers["memory"].needs_enable and sup.controllers["memory"].version == "v2"
    (tmp_path / "user.slice" / "app.scope" / "cgroup.procs").write_text("1\n")
    sup = cgroups.probe(proc_cgroup=proc, mountinfo=mountinfo)
    assert not sup.controllers["memory"].usable
    assert "Delegate=yes" in sup.controllers["memory"].reason


def test_v2_join_and_kill_all_via_cgroup_kill(support, tmp_path):
    """The v2 path of join/kill_all/remove on a real cgroup2 directory (here the
    controller-less unified hierarchy is enough: cgroup.procs and cgroup.kill are core)."""
    base = support.v2_base
    assert base is not None, "this machine mounts cgroup2 (cgroup v2 or hybrid)"
    d = os.path.join(base, f"sandbox-{cgroups.owner_token()}-t-v2kill")
    if not os.access(base, os.W_OK):
        with pytest.raises(PermissionError):
            os.mkdir(d)
        return
    os.mkdir(d)
    run = cgroups.RunCgroup(os.path.basename(d), {"pids": ("v2", d)})
    r, w = os.pipe()
    hold_r, hold_w = os.pipe()

    def family() -> int:
        run.join(0)
        for _ in range(3):
            if os.fork() == 0:
                if os.fork() == 0:      # double fork + setsid: an escapee
                    os.setsid()
                    os.read(hold_r, 1)
                os._exit(0)
        os.write(w, b"ok")
        os.read(hold_r, 1)
        return 0

    pid = _fork(family)
    os.close(w)      # a child that dies before writing gives EOF, not a hang
    try:
        assert os.read(r, 2) == b"ok"
        assert len(run.procs()) >= 4
        assert run.kill_all() is True
        assert run.procs() == set()
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        assert run.remove()
        for fd in (r, hold_r, hold_w):
            os.close(fd)
    assert not os.path.exists(d)


def test_kill_all_thaws_even_when_the_freeze_did_not_complete(monkeypatch, tmp_path):
    """Before: a freeze that had not completed by the deadline (a busy machine) was never
    undone, so the cgroup stayed FROZEN with its killed tasks alive in the refrigerator
    for ever, and every later stale-cgroup cleanup paid a second for it."""
    from sandbox.monitor import cgroups
    freezer = tmp_path / "freezer"
    freezer.mkdir()
    (freezer / "cgroup.procs").write_text("")
    writes: list[str] = []

    def fake(path: str, state: str, deadline: float) -> bool:
        writes.append(state)
        return False     # the freeze (and the thaw) did not complete in time

    monkeypatch.setattr(cgroups, "_set_freezer", fake)
    run = cgroups.RunCgroup("t", {"freezer": ("v1", str(freezer))})
    assert run.kill_all(timeout=0.1) is True
    assert writes == ["FROZEN", "THAWED"]
