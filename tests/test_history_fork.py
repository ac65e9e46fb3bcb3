"""The run history across fork(): a forked child that inherited the parent's History
(a worker, a daemon's per-run fork, a library user's multiprocessing) never closes,
frees or uses the parent's SQLite connection, whatever it does with it (records,
drops it, is garbage-collected, exits through the interpreter's teardown, closed and
reused its descriptors first), and its own records are kept; judged from the parent:
every record there and `PRAGMA integrity_check` ok. And the file shrinks after gc."""
from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from sandbox.history import History
from sandbox.launcher.result import RunResult

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rec(h: History, run_id: str, command: str = "[]", retention: float | None = None) -> None:
    h.record(RunResult(run_id=run_id), kind="exec", command=command, own_output=False,
             retention=retention)


def _stored(path: str) -> tuple[str, set[str]]:
    """(integrity_check, run ids) as a new process's reader sees them."""
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(c.execute('PRAGMA integrity_check').fetchone()[0]); "
            "print(*[r[0] for r in c.execute('SELECT run_id FROM runs')])")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    return out[0], set(out[1].split()) if len(out) > 1 else set()


class Child:
    """A forked child holding the parent's History, doing what it is told over a pipe:
    `record ID` (with the inherited History, or a new one once dropped), `drop` (lets
    go of it: the cyclic GC runs), `exit` (drops it, then ends)."""

    def __init__(self, h: History) -> None:
        cmd_r, self.cmd_w = os.pipe()
        self.ack_r, ack_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            code = 1
            try:
                os.close(self.cmd_w)
                os.close(self.ack_r)
                self._serve(h, cmd_r, ack_w)
                code = 0
            finally:
                os._exit(code)
        os.close(cmd_r)
        os.close(ack_w)

    @staticmethod
    def _serve(h: History | None, cmd_r: int, ack_w: int) -> None:
        path = h.path if h is not None else ""
        while True:
            op, _, arg = os.read(cmd_r, 100).decode().partition(" ")
            if op == "record":
                _rec(h if h is not None else History(path), arg)
            else:
                h = None
                gc.collect()
                if op == "exit":
                    return
            os.write(ack_w, b"k")

    def do(self, command: str) -> bool:
        os.write(self.cmd_w, command.encode())
        return os.read(self.ack_r, 1) == b"k"

    def end(self) -> int:
        os.write(self.cmd_w, b"exit")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.cmd_w)
        os.close(self.ack_r)
        return os.waitstatus_to_exitcode(status)


EVENTS = st.lists(st.one_of(
    st.sampled_from([("parent", "record"), ("parent", "close"), ("fork", "")]),
    st.tuples(st.integers(0, 3), st.sampled_from(["record", "drop", "exit"]))),
    min_size=1, max_size=9)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS)
# what lost records before: the child, writing through a connection of its own that
# took none of the locks it believed it held (its parent's, inherited), wrote on into
# the WAL the parent's close had checkpointed and deleted
@example(events=[("fork", ""), (0, "record"), ("parent", "close"), (0, "record")])
@example(events=[("fork", ""), (0, "drop"), (0, "record"), ("parent", "close"),
                 (0, "record"), ("parent", "record")])
def test_forked_children_never_damage_the_parents_history(tmp_path, events):
    path = str(tmp_path / f"h{os.urandom(4).hex()}" / "runs.sqlite")
    h = History(path)
    _rec(h, "%032x" % 0)
    expected, children, n = {"%032x" % 0}, [], 1
    try:
        for who, what in events:
            if who == "fork":
                children.append(Child(h))
            elif who == "parent" and what == "record":
                _rec(h, "%032x" % n)
                expected.add("%032x" % n)
                n += 1
            elif who == "parent":
                h.close()
            elif children:
                child = children[who % len(children)]
                if what == "exit":
                    children.remove(child)
                    assert child.end() == 0
                elif what == "record":
                    assert child.do(f"record {n:032x}")
                    expected.add("%032x" % n)
                    n += 1
                else:
                    assert child.do("drop")
        _rec(h, "%032x" % n)            # the parent's connection still works
        expected.add("%032x" % n)
    finally:
        for child in children:
            assert child.end() == 0
        h.close()
    assert _stored(path) == ("ok", expected)


TEARDOWN = textwrap.dedent("""
    import fcntl, gc, os, sqlite3, sys, time
    kind, d, files = sys.argv[1:4]
    if kind == "history":
        from sandbox.history import History
        from sandbox.launcher.result import RunResult
        path = os.path.join(d, "runs.sqlite")
        db = History(path)
        def write(i):
            db.record(RunResult(run_id="%032x" % i), kind="exec", command="[]",
                      own_output=False)
        table, before_fork, after_fork = "runs", lambda: None, lambda: None
    elif kind == "service":
        from sandbox.service.store import Store
        path = os.path.join(d, "service.db")
        db = Store(path)
        write = lambda i: db.set_setting("k%d" % i, "v")
        table, before_fork, after_fork = "settings", lambda: None, lambda: None
    else:                # the monitor's audit writer, in a transaction at the fork
        from sandbox.audit import store
        db = store.create_run(d, "%032x" % 0, policy="p", files="all", mode="exec", argv=None)
        path = db.path
        write = lambda i: db.conn.execute(store.INSERT_RECORD, (
            i + 1, 0.0, 0.0, 1, 1, "read", "openat", b"/f", None, 1, "r", "kernel", None))
        table = "records"
        before_fork = lambda: db.conn.execute("BEGIN")
        after_fork = lambda: db.conn.execute("COMMIT")
    for i in range(5):
        write(i)
    before_fork()
    write(5)
    pid = os.fork()
    if pid == 0:
        os.closerange(3, 1024)       # as close_fds does: the connection's numbers are free
        for k in range(8):           # and the child's own files take them, locked
            fd = os.open(os.path.join(files, str(k)), os.O_RDWR | os.O_CREAT, 0o600)
            os.write(fd, bytes([k + 1]) * (1 << 20))
            fcntl.lockf(fd, fcntl.LOCK_EX)
        del db                       # the child lets go of it: freed now
        gc.collect()
        os.close(os.open(os.path.join(files, "dropped"), os.O_CREAT | os.O_WRONLY, 0o600))
        while not os.path.exists(os.path.join(files, "go")):
            time.sleep(0.01)
        sys.exit(0)                  # and through the interpreter's teardown
    dropped, unlocked = os.path.join(files, "dropped"), []
    while not os.path.exists(dropped) and os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.01)
    for k in range(8):               # the child's locks on its files are still its own
        fd = os.open(os.path.join(files, str(k)), os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            unlocked.append(k)
        except OSError:
            pass
        os.close(fd)
    os.close(os.open(os.path.join(files, "go"), os.O_CREAT | os.O_WRONLY, 0o600))
    _, status = os.waitpid(pid, 0)
    after_fork()
    for i in range(6, 10):
        write(i)
    db.close()
    con = sqlite3.connect(path)
    print(con.execute("PRAGMA integrity_check").fetchone()[0],
          con.execute(f"SELECT count(*) FROM {table}").fetchone()[0], *unlocked)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.parametrize("kind", ["history", "service", "audit"])
def test_a_child_that_reused_the_descriptors_exits_without_touching_its_files(tmp_path, kind):
    files, d = tmp_path / "files", tmp_path / "db"
    files.mkdir()
    d.mkdir(mode=0o700)
    p = subprocess.run([sys.executable, "-c", TEARDOWN, kind, str(d), str(files)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for k in range(8):
        assert (files / str(k)).read_bytes() == bytes([k + 1]) * (1 << 20), f"file {k} written"
    assert p.stdout.split() == ["ok", "10"]     # after "10": the files the child's lock left


def _size(path: Path) -> int:
    return sum(os.path.getsize(f"{path}{s}") for s in ("", "-wal")
               if os.path.exists(f"{path}{s}"))


def _fill(h: History, count: int) -> None:
    for i in range(count):
        _rec(h, "%032x" % i, command="x" * 8000)


def test_gc_shrinks_the_file(tmp_path):
    state = tmp_path / "state"
    path = state / "history" / "runs.sqlite"
    env = {**os.environ, "SANDBOX_HOME": str(state)}
    h = History(str(path))
    _fill(h, 200)
    h.close()
    before = _size(path)
    p = subprocess.run([sys.executable, "-m", "sandbox", "gc", "--older-than", "0s"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout == "forgot 200 run(s)\n", p.stderr
    assert _size(path) < before / 10, (before, _size(path))


def test_gc_converts_a_file_made_without_auto_vacuum(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path))
    h = History()
    _rec(h, "%032x" % 999)
    h.close()
    with sqlite3.connect(h.path) as con:      # as older versions made it: no auto_vacuum
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA auto_vacuum=NONE")
        con.execute("VACUUM")
        assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    _fill(h, 200)
    h.close()
    before = _size(Path(h.path))
    assert len(h.gc(0)) == 201
    assert _size(Path(h.path)) < before / 10, (before, _size(Path(h.path)))
    with sqlite3.connect(h.path) as con:
        assert con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_the_retention_sweep_gives_the_pages_back(tmp_path):
    h = History(str(tmp_path / "h" / "runs.sqlite"))
    _fill(h, 200)
    h.close()
    before = _size(Path(h.path))
    _rec(h, "f" * 32, retention=0.0)       # the first sweep: every older record goes
    h.close()                               # (the WAL is checkpointed at the latest here)
    assert _stored(h.path) == ("ok", {"f" * 32})
    assert _size(Path(h.path)) < before / 10, (before, _size(Path(h.path)))
