"""The run history keeps SQLite's POSIX locks: nothing of ours opens and closes the
database file by name while a connection to it may be open in the process.

WHY: a POSIX lock belongs to the (process, file) pair, and closing ANY descriptor
of the file drops every lock the process holds on it, SQLite's included (its unix
VFS only knows its own descriptors). `History._connect` checked the file by opening
and closing it (output_path.private_file) on every connect; a second History of the
same file in one process (the daemon's relay writes one per path string its clients
name, a library has one per Launcher) thereby dropped the first connection's SHARED
lock on the database. Another process closing its last connection then took the
EXCLUSIVE lock, checkpointed and deleted the WAL and -shm under the live connection,
and two WAL indexes wrote pages into one file: `database disk image is malformed`
within a second of concurrent records (the stress test below, measured 3 of 3 runs
on the unfixed code; 0 of 3 with one History per process). Judged by the file:
`PRAGMA integrity_check` and the header, never by timing.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from proc_locks import SHARED_FIRST, posix_locks
from sandbox.history import History
from sandbox.launcher.result import RunResult
from sandbox.thin import control as D


def _rec(h: History, run_id: str, denied: int = 0) -> None:
    h.record(RunResult(run_id=run_id, denied=[{"path": "/etc/shadow", "n": i}
                                              for i in range(denied)]),
             kind="exec", command="[]", own_output=False)


def _my_read_locks(path: str, pid: int | None = None) -> list[str]:
    """The read locks of this process (or `pid`) on SQLite's SHARED range of `path`."""
    return posix_locks(path, "READ", SHARED_FIRST, pid)


def test_a_second_history_of_the_file_leaves_the_first_connections_lock(tmp_path):
    path = str(tmp_path / "h" / "runs.sqlite")
    first = History(path)
    _rec(first, "a" * 32)
    assert _my_read_locks(path), "the writer connection holds SQLite's SHARED lock"
    # the same file by another name (as two clients of the daemon may name it)
    second = History(str(tmp_path / "h" / "." / "runs.sqlite"))
    _rec(second, "b" * 32)
    second.gc(older_than=10 * 86400.0)     # connects with create=True too
    assert len(second.list()) == 2
    assert _my_read_locks(path), "a connect in this process dropped the writer's lock"
    second.close()
    _rec(first, "c" * 32)
    first.close()
    assert sorted(e.run_id for e in History(path).list()) == ["a" * 32, "b" * 32, "c" * 32]


@pytest.mark.isolation
def test_the_daemon_keeps_its_lock_when_clients_name_the_file_differently(tmp_path):
    """The real warm daemon: two `sandbox exec` clients whose SANDBOX_HOME names the
    same directory differently give the relay two History objects of one file
    (measured before the fix: the daemon then held no lock on it)."""
    home = str(tmp_path / "state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["SANDBOX_HOME"] = home
    daemon = int(D.start(env).split("running pid ")[1].split()[0])
    try:
        for name in (home, os.path.join(home, ".")):
            run = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--", "/bin/true"],
                                 env={**env, "SANDBOX_HOME": name}, timeout=120)
            assert run.returncode == 0
        path = os.path.join(home, "history", "runs.sqlite")
        assert len(History(path).list()) == 2
        assert _my_read_locks(path, daemon), "the daemon's writer lost SQLite's lock"
    finally:
        os.kill(daemon, signal.SIGKILL)


_WRITER = """
import sys
from sandbox.history import History
from sandbox.launcher.result import RunResult
path, role, n, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def rec(h, i, denied):
    h.record(RunResult(run_id="%032x" % i, denied=[{"path": "/etc/shadow", "n": k}
                                                  for k in range(denied)]),
             kind="exec", command="[]", own_output=False)
if role == "daemon":       # one process, two names of the file (two clients' paths)
    hs = [History(path), History(path.replace("/runs.sqlite", "/./runs.sqlite"))]
    for i in range(n):
        rec(hs[i % 2], base + i, 3000 if i % 7 == 0 else 0)
    for h in hs:
        h.close()
elif role == "gc":
    for i in range(n):
        History(path).gc(older_than=86400.0)
        History(path).list()
else:                       # cold `sandbox exec`s: one record each, then exit
    for i in range(n):
        h = History(path)
        rec(h, base + i, 20000 if i % 3 == 0 else 0)
        h.close()
"""


def test_concurrent_writers_in_and_across_processes_keep_the_file_whole(tmp_path):
    path = str(tmp_path / "h" / "runs.sqlite")
    _rec(History(path), "f" * 32)
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, path, role, str(n), str(base)])
             for role, n, base in (("daemon", 300, 10**6), ("cli", 30, 10**4),
                                   ("cli", 30, 2 * 10**4), ("cli", 30, 3 * 10**4),
                                   ("gc", 10, 0))]
    for p in procs:
        p.wait()
    with open(path, "rb") as f:
        assert f.read(16) == b"SQLite format 3\0"
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1 + 300 + 3 * 30
    finally:
        con.close()
    assert [p.returncode for p in procs] == [0] * len(procs)
