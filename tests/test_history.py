"""Run history: every run recorded (0700/0600, hidden from sandboxes), `sandbox
runs list|show|logs|rm`, `sandbox gc` and the default retention, empty output
directories removed, `exec -v` printing the run id."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.history import History
from sandbox.launcher.result import RunResult, Status

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(state: Path, *args: str, cwd: str | Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SANDBOX_HOME": str(state), "SANDBOX_AUDIT_DB": str(state / "a.sqlite")}
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _run_id(stderr: str) -> str:
    line = [ln for ln in stderr.splitlines() if ln.startswith("sandbox: run ")][-1]
    return line.split()[2].rstrip(":")


@pytest.mark.isolation
def test_exec_is_recorded_and_shown(tmp_path):
    state = tmp_path / "state"
    p = cli(state, "exec", "-v", "--", "sh", "-c", "echo out; exit 3")
    assert p.returncode == 3 and p.stdout == "out\n"
    run_id = _run_id(p.stderr)
    assert len(run_id) == 32
    listed = json.loads(cli(state, "runs", "list", "--json").stdout)
    assert [(e["run_id"], e["status"], e["exit_code"], e["kind"]) for e in listed] == \
        [(run_id, "error", 3, "exec")]
    assert json.loads(listed[0]["command"]) == ["sh", "-c", "echo out; exit 3"]
    assert cli(state, "runs").stdout == cli(state, "runs", "list").stdout   # list by default
    assert run_id[:12] in cli(state, "runs").stdout
    shown = json.loads(cli(state, "runs", "show", run_id[:8], "--json").stdout)
    assert shown["run_id"] == run_id and shown["exit_code"] == 3
    text = cli(state, "runs", "show", run_id[:8]).stdout
    assert "sh -c 'echo out; exit 3'" in text and "status:   error" in text
    # private: the directory 0700, the database 0600
    hist = state / "history"
    assert stat.S_IMODE(hist.stat().st_mode) == 0o700
    assert stat.S_IMODE((hist / "runs.sqlite").stat().st_mode) == 0o600


def test_a_run_with_huge_logs_costs_the_history_one_mebibyte(tmp_path):
    """60 log records of 1 MB each grew the history by 60 MB per run, kept 30 days
    (found by an attacker's probe). The history keeps 1 MiB of a result."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    hist = History(str(state / "history" / "runs.sqlite"))
    big = RunResult(run_id="ab" * 16, status=Status.OK, exit_code=0,
                    logs=[{"level": "info", "message": "x" * 1_000_000}] * 60,
                    stdout="y" * 5_000_000)
    hist.record(big, kind="workflow", command="w", own_output=False)
    hist.close()
    size = sum(f.stat().st_size for f in (state / "history").iterdir())
    assert size < 4 << 20, size
    shown = cli(state, "runs", "show", "abab")
    assert shown.returncode == 0 and "trimmed:  logs (60 more), stdout" in shown.stdout, shown
    _, kept = History(str(state / "history" / "runs.sqlite")).get("abab")
    assert kept["history_trimmed"]["logs"] == 60 and kept["exit_code"] == 0


@pytest.mark.isolation
def test_workflow_logs_and_rm(tmp_path):
    state = tmp_path / "state"
    p = cli(state, "run", "-v", os.path.join(ROOT, "docs/examples/hello.json"))
    assert p.returncode == 0, p.stderr
    run_id = _run_id(p.stderr)
    logs = cli(state, "runs", "logs", run_id[:10])
    assert logs.returncode == 0 and "INFO" in logs.stdout and "hello, sandbox!" in logs.stdout
    assert cli(state, "runs", "rm", run_id[:10]).stdout == f"removed {run_id}\n"
    gone = cli(state, "runs", "show", run_id)
    assert gone.returncode == 2 and len(gone.stderr.splitlines()) == 1


@pytest.mark.isolation
def test_empty_output_dirs_are_removed_and_used_ones_kept(tmp_path):
    from sandbox.launcher.launcher import Launcher
    state = tmp_path / "state"
    os.environ["SANDBOX_HOME"] = str(state)
    try:
        with Launcher() as launcher:
            empty = launcher.spawn(["true"])
            used = launcher.spawn(["sh", "-c", 'echo x > "$SANDBOX_OUTPUT/f"'])
    finally:
        del os.environ["SANDBOX_HOME"]
    assert empty.ok and empty.output_dir is None
    assert not (state / "runs" / empty.run_id).exists()
    assert used.ok and (Path(used.output_dir) / "f").read_text() == "x\n"
    assert sorted(os.listdir(state / "runs")) == [used.run_id]


@pytest.mark.isolation
def test_a_sandbox_cannot_read_or_forge_the_history(tmp_path):
    """Attack: ${WORKDIR} is the state directory's parent and writable. The
    program tries to read earlier runs' records and to overwrite the database;
    judged from the host."""
    home = tmp_path / "home"
    state = home / "state"
    secret = "TOKEN-4d5e6f"
    first = cli(state, "exec", "--", "true", secret)
    assert first.returncode == 0, first.stderr
    policy = tmp_path / "rw.toml"
    policy.write_text('extends = ["default"]\n[filesystem]\nwrite = ["${WORKDIR}"]\n')
    attack = ("cat state/history/runs.sqlite state/history/runs.sqlite-wal 2>/dev/null; "
              "ls -a state/history; echo forged > state/history/runs.sqlite; "
              "rm -f state/history/runs.sqlite-wal; true")
    p = cli(state, "exec", "--policy", str(policy), "--workdir", str(home), "--",
            "sh", "-c", attack, cwd=home)
    assert "SQLite format" not in p.stdout and secret not in p.stdout
    assert "runs.sqlite" not in p.stdout
    with sqlite3.connect(state / "history" / "runs.sqlite") as con:
        commands = [r[0] for r in con.execute("SELECT command FROM runs")]
    assert any(secret in c for c in commands) and len(commands) == 2


def test_gc_and_default_retention(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path))
    hist = History()
    runs = tmp_path / "runs"

    def made(run_id: str, files: bool) -> RunResult:
        out = runs / run_id / "output"
        out.mkdir(parents=True)
        if files:
            (out / "f").write_text("x")
        return RunResult(run_id=run_id, status=Status.OK, output_dir=str(out), wall_time=0.1)

    old, new = "a" * 32, "b" * 32
    hist.record(made(old, True), kind="exec", command="[]", own_output=True, retention=None)
    hist.record(made(new, True), kind="exec", command="[]", own_output=True, retention=None)
    leftover = runs / ("c" * 32) / "output"          # an empty dir from an older version
    leftover.mkdir(parents=True)
    week_ago = time.time() - 8 * 86400
    with sqlite3.connect(hist.path) as con:
        con.execute("UPDATE runs SET ended=? WHERE run_id=?", (week_ago, old))
    os.utime(leftover.parent, (week_ago, week_ago))
    p = cli(tmp_path, "gc", "--older-than", "7d")
    assert p.returncode == 0 and p.stdout == "forgot 1 run(s)\n", p.stderr
    assert [e.run_id for e in hist.list()] == [new]
    assert not (runs / old).exists() and not leftover.parent.exists()
    assert (runs / new / "output" / "f").exists()
    # the default retention applies by itself when a run is recorded
    with sqlite3.connect(hist.path) as con:
        con.execute("UPDATE runs SET ended=? WHERE run_id=?", (time.time() - 31 * 86400, new))
        con.execute("DELETE FROM meta")
    hist.record(RunResult(run_id="d" * 32, status=Status.OK), kind="exec", command="[]",
                own_output=False)
    assert [e.run_id for e in hist.list()] == ["d" * 32]
    assert not (runs / new).exists()


def test_user_output_dirs_are_never_removed_by_gc(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "state"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep").write_text("x")
    hist = History()
    hist.record(RunResult(run_id="e" * 32, output_dir=str(mine)), kind="exec", command="[]",
                own_output=False)
    assert hist.gc(0) == ["e" * 32]
    assert (mine / "keep").exists()


@pytest.mark.isolation
def test_history_can_be_turned_off(tmp_path, monkeypatch):
    from sandbox.launcher.launcher import Launcher
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path))
    with Launcher(history=False) as launcher:
        assert launcher.spawn(["true"]).ok
    assert not (tmp_path / "history").exists()
    with Launcher(history=str(tmp_path / "h.sqlite")) as launcher:
        r = launcher.spawn(["true"])
    assert [e.run_id for e in History(str(tmp_path / "h.sqlite")).list()] == [r.run_id]


@pytest.mark.isolation
def test_a_damaged_history_is_left_alone_and_not_retried_every_run(tmp_path):
    """A history file SQLite finds damaged (SQLITE_CORRUPT / NOTADB) fails every record:
    the runs still end ok, the file is left as it is, the next runs do not reopen it
    each time (a damaged 3.2 GB history on the benchmark machine cost every run a
    reconnect), and `History.damaged` says why and what to do."""
    from sandbox import history as H
    from sandbox.launcher.launcher import Launcher
    path = tmp_path / "history" / "runs.sqlite"
    path.parent.mkdir(mode=0o700)
    garbage = b"this is not an SQLite database\n" * 200
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, garbage)
    os.close(fd)
    opened = []
    original = H.History._connect

    def counting(self, create):
        opened.append(create)
        return original(self, create)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(H.History, "_connect", counting)
        with Launcher(history=str(path)) as launcher:
            results = [launcher.spawn(["/bin/true"], workdir=str(tmp_path)) for _ in range(3)]
            why = launcher.history.damaged
    for r in results:
        assert r.status == "ok", (r.status, r.reason)
        assert not any("history" in h for h in r.hints), r.hints   # stderr is the program's
    assert len(opened) == 1          # tried once, then skipped for a while
    assert why is not None and str(path) in why and "damaged" in why and "move it away" in why
    assert path.read_bytes() == garbage


@pytest.mark.parametrize("how", ["not a database", "a damaged page"])
def test_reading_a_damaged_history_says_so_on_one_line(tmp_path, how):
    """`sandbox runs list|show|rm` and `sandbox gc` on a history file SQLite finds
    damaged: one line naming the file and what to do, exit 2, the file never replaced
    (it was "internal error: DatabaseError: database disk image is malformed ...
    please report it")."""
    path = tmp_path / "history" / "runs.sqlite"
    path.parent.mkdir(mode=0o700)
    if how == "not a database":
        path.write_bytes(b"this is not an SQLite database\n" * 200)
    else:
        h = History(str(path))
        for i in range(300):
            h.record(RunResult(run_id=f"{i:012x}", status=Status.OK, exit_code=0, wall_time=0.1),
                     kind="exec", command="[\"/bin/true\"]", own_output=False)
        h.close()
        data = bytearray(path.read_bytes())
        assert len(data) > 8 * 4096
        data[4096 * 2:4096 * 6] = os.urandom(4096 * 4)   # interior pages of the table
        path.write_bytes(bytes(data))
    path.chmod(0o600)
    inode = path.stat().st_ino
    for args in (["runs", "list"], ["runs", "show", "0000000000aa"], ["runs", "rm", "0000000000aa"],
                 ["gc", "--older-than", "0s"], ["runs", "list"]):
        p = cli(tmp_path, *args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, (args, p.returncode, p.stderr)
        assert "internal error" not in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert str(path) in lines[0] and "damaged" in lines[0] and "move it away" in lines[0], \
            (args, lines)
    assert path.stat().st_ino == inode      # the user's file: never replaced
