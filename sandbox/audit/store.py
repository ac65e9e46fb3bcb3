"""The audit store: one SQLite file (stdlib), a table of runs and one of records.

Default location: ``$SANDBOX_HOME/audit.sqlite`` (``state_dir()`` of the
launcher, i.e. ``~/.local/state/sandbox`` for the caller), overridden by the
environment variable ``SANDBOX_AUDIT_DB`` or ``Launcher(audit_db=...)``. Each
user has their own file in their own state directory, so unprivileged users
need nothing shared.

Writes come from the monitor only (never from the sandbox), in batches, from a
writer thread (`Writer`): the notification loop appends record tuples to a
deque and never touches SQLite itself. WAL mode lets `sandbox audit` read
while runs write; a busy timeout lets parallel monitors share the file.
"""
from __future__ import annotations

import collections
import os
import sqlite3
import threading
import time
from typing import Callable, Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    started    REAL NOT NULL,
    ended      REAL,
    policy     TEXT,
    files      TEXT,            -- the [audit] files mode: denied | all
    mode       TEXT,            -- exec | workflow
    argv       TEXT,            -- JSON, exec mode only
    paths      TEXT,            -- JSON: the run's workdir and output (for policy suggest)
    records    INTEGER DEFAULT 0,
    dropped    INTEGER DEFAULT 0,
    summary    TEXT             -- JSON, written when the run ends
);
CREATE TABLE IF NOT EXISTS records (
    run_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,   -- 1, 2, ... in the order the monitor received them
    ts         REAL NOT NULL,      -- seconds since the epoch
    pid        INTEGER NOT NULL,   -- the calling thread, in the host's PID namespace
    operation  TEXT NOT NULL,      -- read write create delete exec metadata
    syscall    TEXT NOT NULL,
    path       TEXT NOT NULL,      -- absolute, as the sandbox sees it (= host path for binds)
    flags      TEXT,               -- e.g. O_WRONLY|O_CREAT, AT_REMOVEDIR, symlink target
    allowed    INTEGER NOT NULL,   -- the policy engine's verdict on `path`
    rule       TEXT NOT NULL,      -- the rule that decided it
    enforced   TEXT NOT NULL,      -- kernel (CONTINUE: the layers decide) | monitor
    result     TEXT,               -- what the monitor answered, when it answered itself
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""

COLUMNS = ("run_id", "seq", "ts", "pid", "operation", "syscall", "path", "flags", "allowed",
           "rule", "enforced", "result")
_INSERT = f"INSERT OR REPLACE INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

BATCH = 2000              # rows per executemany / transaction
FLUSH_SECONDS = 0.1       # the writer also flushes whatever waits this often
HIGH_WATER = 200_000      # queued rows above which the notification loop waits (backpressure)
BACKPRESSURE_SECONDS = 5.0  # longest it waits before counting rows as dropped


def default_path() -> str:
    env = os.environ.get("SANDBOX_AUDIT_DB")
    if env:
        return os.path.abspath(env)
    from sandbox.launcher.prepare import state_dir
    return os.path.join(state_dir(), "audit.sqlite")


def connect(path: str | None = None, *, create: bool = True) -> sqlite3.Connection:
    """Open (and create, with its directory) the audit database."""
    path = path or default_path()
    if not create and not os.path.exists(path):
        from sandbox.errors import InputError
        raise InputError(f"no audit database at {path} (set SANDBOX_AUDIT_DB or run an "
                         "audited sandbox first)")
    if create:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    if create:
        conn.executescript(SCHEMA)
    return conn


def begin_run(conn: sqlite3.Connection, run_id: str, *, policy: str, files: str, mode: str,
              argv: str | None, paths: str | None = None) -> None:
    conn.execute("INSERT OR REPLACE INTO runs (run_id, started, policy, files, mode, argv, paths) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (run_id, time.time(), policy, files, mode, argv, paths))


def end_run(conn: sqlite3.Connection, run_id: str, *, records: int, dropped: int,
            summary: str) -> None:
    conn.execute("UPDATE runs SET ended = ?, records = ?, dropped = ?, summary = ? "
                 "WHERE run_id = ?", (time.time(), records, dropped, summary, run_id))


class Writer:
    """A thread that drains record tuples from `queue` into SQLite in batches.

    The producer (the notification loop) calls `put(row)`: a deque append,
    no lock, no I/O. `put` returns False only when the queue is above
    HIGH_WATER; then the producer calls `wait_room()`, which blocks up to
    BACKPRESSURE_SECONDS (slowing the sandbox, whose syscall is pending) and
    tells it whether the row must be counted as dropped. Nothing is dropped
    silently: `dropped` is reported in the run summary and the runs table.
    """

    def __init__(self, conn: sqlite3.Connection | Callable[[], sqlite3.Connection]) -> None:
        """`conn`, or a callable that opens it: then the opening (file, schema,
        the run's row: several milliseconds with an fsync) happens on the
        writer's thread, off the path of the sandbox's first notified syscall,
        while records already queue up."""
        self._opener = conn if callable(conn) else None
        self.conn: sqlite3.Connection | None = None if callable(conn) else conn
        self._opened = threading.Event()
        if self.conn is not None:
            self._opened.set()
        self.queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self.written = 0
        self.dropped = 0
        self.error: str | None = None
        self._wake = threading.Event()
        self._room = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def put(self, row: tuple[Any, ...]) -> None:
        q = self.queue
        q.append(row)
        n = len(q)
        if n >= BATCH and n % BATCH == 0:
            self._wake.set()
            if n >= HIGH_WATER:
                self._backpressure()

    def _backpressure(self) -> None:
        self._room.clear()
        if not self._room.wait(BACKPRESSURE_SECONDS) and len(self.queue) >= HIGH_WATER:
            # The writer is stuck (disk full, locked database): keep the loop going,
            # discard the oldest surplus and count it.
            while len(self.queue) > HIGH_WATER // 2:
                self.queue.popleft()
                self.dropped += 1

    def _drain(self) -> None:
        q = self.queue
        if self.conn is None:
            if self._opened.is_set():  # the store could not be opened: count, do not keep
                self.dropped += len(q)
                q.clear()
                self._room.set()
            return
        while q:
            batch = []
            pop = q.popleft
            try:
                for _ in range(BATCH):
                    batch.append(pop())
            except IndexError:
                pass
            try:
                with_tx(self.conn, _INSERT, batch)
                self.written += len(batch)
            except sqlite3.Error as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self.dropped += len(batch)
            if len(q) < HIGH_WATER // 2:
                self._room.set()

    def _run(self) -> None:
        if self._opener is not None:
            try:
                self.conn = self._opener()
            except Exception as exc:  # reported in the summary; records are counted as dropped
                self.error = f"{type(exc).__name__}: {exc}"
            finally:
                self._opened.set()
        while not self._stop:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self._drain()
        self._drain()

    def close(self) -> None:
        """Write everything queued, stop the thread."""
        self._stop = True
        self._wake.set()
        self._thread.join()
        self._drain()

    def wait_open(self) -> sqlite3.Connection | None:
        self._opened.wait()
        return self.conn


def with_tx(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    conn.execute("BEGIN")
    try:
        conn.executemany(sql, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- reading -----------------------------------------------------------------------------------
def runs(conn: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT run_id, started, ended, policy, files, mode, argv, records, "
                       "dropped FROM runs ORDER BY started DESC LIMIT ?", (limit,))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur]


def run_info(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    cur = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


def find_run(conn: sqlite3.Connection, prefix: str) -> str:
    """A full run id from a unique prefix (as git does with commits)."""
    from sandbox.errors import InputError
    rows = conn.execute("SELECT run_id FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
                        (prefix, prefix + "\U0010ffff")).fetchall()
    if not rows:
        raise InputError(f"no audited run {prefix!r} in the audit database")
    if len(rows) > 1:
        raise InputError(f"run id prefix {prefix!r} is ambiguous")
    return rows[0][0]


def records(conn: sqlite3.Connection, run_id: str, *, denied_only: bool = False
            ) -> Iterator[dict[str, Any]]:
    sql = f"SELECT {', '.join(COLUMNS)} FROM records WHERE run_id = ?"
    if denied_only:
        sql += " AND allowed = 0"
    for row in conn.execute(sql + " ORDER BY seq", (run_id,)):
        yield as_dict(row)


def as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(COLUMNS, row))
    d["verdict"] = "allowed" if d.pop("allowed") else "denied"
    d["time"] = d.pop("ts")
    return d
