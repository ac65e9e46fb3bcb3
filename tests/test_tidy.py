"""A run's private directory is removed off the caller's return path (launcher/tidy.py),
and none outlives `Launcher.close()`."""
from __future__ import annotations

import glob
import os
import tempfile

import pytest

from sandbox.launcher import tidy
from sandbox.launcher.launcher import Launcher


def _rundirs(run_id: str) -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"sandbox-{run_id[:12]}-*"))


def test_drain_waits_for_every_queued_directory(tmp_path):
    dirs = []
    for i in range(20):
        d = tmp_path / f"run{i}" / "root" / "etc"
        d.mkdir(parents=True)
        (d / "passwd").write_text("x")
        dirs.append(tmp_path / f"run{i}")
        tidy.remove_later(str(dirs[-1]))
    tidy.drain()
    assert [d for d in dirs if d.exists()] == []


@pytest.mark.isolation
def test_no_run_directory_outlives_a_closed_launcher():
    la = Launcher(capture_output=True, history=False)
    try:
        results = [la.spawn(["true"], policy="strict") for _ in range(3)]
    finally:
        la.close()
    assert all(r.ok for r in results), [(r.status, r.reason) for r in results]
    assert [d for r in results for d in _rundirs(r.run_id)] == []


def _rundir(top, name: str, owner: str = "dead") -> str:
    """A rundir under `top` as make_paths makes it, with its owner lock held by a live
    child process ("live"), by none ("dead"), or with no owner lock ("none")."""
    d = top / f"{tidy.PREFIX}{name}-x"
    (d / "tmp").mkdir(parents=True)
    (d / "view-passwd").write_text("x")
    if owner != "none":
        fd = tidy.own(str(d))
        if owner == "live":
            _holders.append(_hold(fd))
        os.close(fd)
    return str(d)


_holders: list = []


def _hold(fd: int):
    """A child process holding the lock's open file description (the parent closes its
    descriptor): what a live launcher in another process is."""
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            pass_fds=(fd,))


def test_the_sweep_removes_only_the_callers_rundirs_whose_owner_is_gone(tmp_path):
    dead = _rundir(tmp_path, "dead")
    live = _rundir(tmp_path, "live", "live")
    older = _rundir(tmp_path, "older", "none")       # no owner lock: never guessed at
    other = tmp_path / "not-ours-x"
    other.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / tidy.OWNER).write_text("")
    os.symlink(target, tmp_path / f"{tidy.PREFIX}link-x")   # a link is never followed
    try:
        assert tidy.sweep(str(tmp_path)) == [os.path.basename(dead)]
        assert not os.path.exists(dead)
        assert all(os.path.isdir(p) for p in (live, older, other, target))
        assert os.path.islink(tmp_path / f"{tidy.PREFIX}link-x")
        for p in _holders:
            p.kill()
            p.wait()
        _holders.clear()
        assert tidy.sweep(str(tmp_path)) == [os.path.basename(live)]   # its owner is gone
    finally:
        for p in _holders:
            p.kill()
            p.wait()
        _holders.clear()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory of another uid")
def test_the_sweep_leaves_another_users_rundir(tmp_path):
    d = _rundir(tmp_path, "theirs")
    os.chown(d, 65534, 65534)
    assert tidy.sweep(str(tmp_path)) == []
    assert os.path.isdir(d)


@pytest.mark.isolation
def test_the_run_directory_of_a_killed_launcher_goes_with_a_later_launchers_sweep(tmp_path):
    """A `sandbox exec` killed with SIGKILL mid-run removes nothing; the run directory
    it left is removed by the next process that runs a sandbox (its first removal
    thread sweeps the temporary directory), judged on the host's disk."""
    import signal
    import subprocess
    import sys
    import time
    env = {**os.environ, "TMPDIR": str(tmp_path), "SANDBOX_DAEMON": "0"}
    p = subprocess.Popen([sys.executable, "-m", "sandbox", "exec", "--", "sleep", "60"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not glob.glob(str(tmp_path / f"{tidy.PREFIX}*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = glob.glob(str(tmp_path / f"{tidy.PREFIX}*"))
    assert left, "the run never started"
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    time.sleep(0.5)
    assert all(os.path.isdir(d) for d in left)        # nothing removed it
    code = ("import sys; from sandbox import Launcher; la = Launcher(); "
            "r = la.spawn(['true']); la.close(); sys.exit(0 if r.ok else 1)")
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0
    assert glob.glob(str(tmp_path / f"{tidy.PREFIX}*")) == []


# -- an empty output the launcher made goes whole, off the return path -------------------

EMPTIES = ("workdir.changes", "workdir.deleted.json")


def _own_output(state, run_id="r1", *, changes=(), deleted="", extra=None):
    """<state>/runs/<run_id>/output as a strict run leaves it."""
    out = state / "runs" / run_id / "output"
    (out / "workdir.changes").mkdir(parents=True)
    for name in changes:
        (out / "workdir.changes" / name).write_text("x")
    (out / "workdir.deleted.json").write_text(deleted)
    if extra:
        (out / extra).write_text("result")
    return out


def test_an_empty_own_output_goes_whole_to_the_trash_then_away(tmp_path):
    out = _own_output(tmp_path)
    assert tidy.discard_empty_run(str(out), str(tmp_path / "runs"), EMPTIES)
    assert os.listdir(tmp_path / "runs") == []     # gone from `runs` at once
    tidy.drain()
    assert os.listdir(tmp_path / "trash") == []    # and from the trash once the thread ran


@pytest.mark.parametrize("kind", ["a result", "a change", "a deletion", "another name",
                                  "a link", "not a run's", "beside the output"])
def test_anything_in_the_output_keeps_it_where_it_is(tmp_path, kind):
    runs = tmp_path / "runs"
    if kind == "a result":
        out = _own_output(tmp_path, extra="result.json")
    elif kind == "a change":
        out = _own_output(tmp_path, changes=("edited.txt",))
    elif kind == "a deletion":
        out = _own_output(tmp_path, deleted='["gone.txt"]')
    elif kind == "another name":
        out = _own_output(tmp_path)
        os.mkdir(out / "empty-but-the-programs")
    elif kind == "a link":
        real = _own_output(tmp_path, run_id="real")
        os.mkdir(runs / "r1")
        out = runs / "r1" / "output"
        os.symlink(real, out)
    elif kind == "beside the output":
        out = _own_output(tmp_path)
        (runs / "r1" / "notes.txt").write_text("the caller's")
    else:
        out = tmp_path / "elsewhere" / "r1" / "output"
        out.mkdir(parents=True)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert not tidy.discard_empty_run(str(out), str(runs), EMPTIES)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_the_first_discard_of_a_process_empties_what_a_killed_one_left(tmp_path, monkeypatch):
    left = tmp_path / "trash" / "r0" / "output" / "workdir.changes"
    left.mkdir(parents=True)
    monkeypatch.setattr(tidy, "_trash_swept", False)
    assert tidy.discard_empty_run(str(_own_output(tmp_path)), str(tmp_path / "runs"), EMPTIES)
    tidy.drain()
    assert os.listdir(tmp_path / "trash") == []


@pytest.mark.isolation
def test_a_strict_run_that_wrote_nothing_leaves_no_output_and_an_empty_trash(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "state"))
    la = Launcher(capture_output=True, history=False)
    try:
        empty = la.spawn(["true"], policy="strict", workdir=str(tmp_path))
        assert empty.ok and empty.output_dir is None, (empty.status, empty.reason)
        assert os.listdir(tmp_path / "state" / "runs") == []
        used = la.spawn(["sh", "-c", 'echo x > "$SANDBOX_OUTPUT/f"'], policy="strict",
                        workdir=str(tmp_path))
        assert used.ok and used.output_dir
        assert sorted(os.listdir(used.output_dir)) == ["f"]   # its empty layer files gone
    finally:
        la.close()
    assert os.listdir(tmp_path / "state" / "trash") == []


def test_a_held_process_removes_at_drain_without_a_thread(tmp_path):
    """`hold` (the `sandbox exec` daemon's fork): nothing is removed, and no thread
    started, before `drain`, which removes everything queued in the calling thread."""
    import threading
    d = tmp_path / "run" / "root"
    d.mkdir(parents=True)
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        code = 1
        try:
            tidy.hold()
            tidy.remove_later(str(tmp_path / "run"))
            before = (threading.active_count(), (tmp_path / "run").exists())
            tidy.drain()
            code = 0 if before == (1, True) and not (tmp_path / "run").exists() else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not (tmp_path / "run").exists()


def test_a_link_planted_as_the_trash_is_never_followed(tmp_path):
    """A sandbox whose grants reach the state directory may plant `trash` as a link:
    before a discard, the discard does not happen (the output is removed in place, as
    before); after it, the removal still goes through the directory that was opened."""
    victim = tmp_path / "victim" / "r1"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("the caller's")
    os.symlink(tmp_path / "victim", tmp_path / "trash")
    assert not tidy.discard_empty_run(str(_own_output(tmp_path)), str(tmp_path / "runs"),
                                      EMPTIES)
    assert (tmp_path / "runs" / "r1" / "output").is_dir()
    os.unlink(tmp_path / "trash")
    pid = os.fork()
    if pid == 0:   # pragma: no cover - the child
        code = 1
        try:
            tidy.hold()                # the removal waits for drain: swap the link first
            if tidy.discard_empty_run(str(tmp_path / "runs" / "r1" / "output"),
                                      str(tmp_path / "runs"), EMPTIES):
                os.rename(tmp_path / "trash", tmp_path / "trash.real")
                os.symlink(tmp_path / "victim", tmp_path / "trash")
                tidy.drain()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (victim / "keep.txt").read_text() == "the caller's"
    assert os.listdir(tmp_path / "trash.real") == []
