"""The audit store: a directory with one SQLite file per run, written by that run's monitor.

Location: ``$SANDBOX_HOME/audit/`` (``state_dir()`` of the launcher, i.e.
``~/.local/state/sandbox/audit``), overridden by ``SANDBOX_AUDIT_DB`` or
``Launcher.audit_db`` (both name the directory). Created 0700.

WHY ONE FILE PER RUN (issue 11, finding 3). With one shared SQLite file, any
process that could open it -- a sandbox whose policy grants ``$HOME`` -- held
a lock on its ``-shm`` and every monitor of the uid got "database is locked":
records were dropped and an unrelated run ended as an error. Now a run's
records go to ``<run_id>.sqlite``, opened only by the monitor's writer (a rollback
journal while it runs, so `sandbox audit` can read along between the writer's
transactions; a plain file once it ends); the
launcher hides the whole directory from every sandbox's view
(`hidden_paths`). Concurrent runs share no lock, no file and no timeout.

Losslessness (issue 10, finding 5): a path (and a symlink target) is any
bytes but NUL; it is stored as a BLOB of those exact bytes, never as text
that must be valid UTF-8. Readers get it back as a ``surrogateescape`` str.

Bounds: repeats are folded into one row (count, first and last time), a run
stores at most its policy's ``[audit] records`` rows and
``records * TEXT_PER_RECORD`` bytes of path text (`sandbox.audit.writer.Writer`:
one thread writes every run's file of the process), and the
directory is kept under a size cap by deleting the oldest finished runs
(sandbox/audit/retention.py).
"""
from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import time
from typing import Any, Iterator

from sandbox import sqlite_pin
from sandbox.printable import as_bytes, from_bytes

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
    records    INTEGER DEFAULT 0,  -- events recorded (every repeat counts)
    stored     INTEGER DEFAULT 0,  -- rows stored (repeats folded)
    dropped    INTEGER DEFAULT 0,  -- events lost (store failure), with the reason in summary
    not_stored INTEGER DEFAULT 0,  -- events past the record budget
    truncated  INTEGER DEFAULT 0,
    summary    TEXT             -- JSON, written when the run ends
);
CREATE TABLE IF NOT EXISTS records (
    seq        INTEGER PRIMARY KEY, -- the first occurrence's place in the run (1, 2, ...)
    first      REAL NOT NULL,       -- seconds since the epoch, first occurrence
    last       REAL NOT NULL,       -- last occurrence
    count      INTEGER NOT NULL,    -- occurrences folded into this row
    pid        INTEGER NOT NULL,    -- the first caller, in the host's PID namespace
    operation  TEXT NOT NULL,       -- read write create delete exec metadata
    syscall    TEXT NOT NULL,
    path       BLOB NOT NULL,       -- the exact bytes, absolute, as the sandbox sees it
    flags      BLOB,                -- e.g. O_WRONLY|O_CREAT, AT_REMOVEDIR, target=<symlink target>
    allowed    INTEGER NOT NULL,    -- the policy engine's verdict on `path`
    rule       TEXT NOT NULL,       -- the rule that decided it
    enforced   TEXT NOT NULL,       -- kernel (CONTINUE: the layers decide) | monitor
    result     TEXT                 -- what the monitor answered, when it answered itself
);
"""

COLUMNS = ("seq", "first", "last", "count", "pid", "operation", "syscall", "path", "flags",
           "allowed", "rule", "enforced", "result")
# the writer's two statements (`sandbox.audit.writer.Writer`): a new row, a repeat folded in
INSERT_RECORD = f"INSERT INTO records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
BUMP_RECORD = "UPDATE records SET count = count + ?, last = max(last, ?) WHERE seq = ?"

BUSY_MS = 2000            # only `sandbox audit` readers share a run's file (for one read each)
TEXT_PER_RECORD = 256     # bytes of path + flags text per budgeted record, on average
MAX_BYTES = 1 << 30       # default size cap of the store directory ($SANDBOX_AUDIT_MAX_BYTES)
_RUN_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
SUFFIX = ".sqlite"


# -- where -------------------------------------------------------------------------------------
def default_path() -> str:
    """The store directory: $SANDBOX_AUDIT_DB, else $SANDBOX_HOME/audit."""
    env = os.environ.get("SANDBOX_AUDIT_DB")
    if env:
        return os.path.abspath(env)
    from sandbox.launcher.prepare import state_dir
    return os.path.join(state_dir(), "audit")


def max_bytes() -> int:
    env = os.environ.get("SANDBOX_AUDIT_MAX_BYTES")
    try:
        return int(env) if env else MAX_BYTES
    except ValueError:
        return MAX_BYTES


class NoHome(Exception):
    """The store would need a new top-level directory (e.g. HOME=/nonexistent)."""


def ensure_dir(path: str) -> str:
    """Create the store directory (0700); refuse a path that is not a directory.

    Never creates a top-level directory: a store under a HOME that does not
    exist (``/nonexistent`` of a system user) raises `NoHome` instead of
    making that HOME; then nothing is stored (counted) and nothing to hide."""
    from sandbox.errors import InputError
    top = path
    while not os.path.lexists(top):
        parent = os.path.dirname(top)
        if parent == "/" or parent == top:
            raise NoHome(f"no audit store: {top} does not exist (set SANDBOX_AUDIT_DB)")
        top = parent
    if os.path.lexists(path) and not os.path.isdir(path):
        raise InputError(f"audit store {path} is not a directory (an old single-file "
                         "database? move it away or set SANDBOX_AUDIT_DB to a directory)")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the audit store {path}: {exc.strerror} "
                         "(set SANDBOX_AUDIT_DB to a directory you can write)") from None
    if not os.path.isdir(path):
        raise InputError(f"audit store {path} is not a directory (an old single-file "
                         "database? move it away or set SANDBOX_AUDIT_DB to a directory)")
    return path


def run_file(directory: str, run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return os.path.join(directory, run_id + SUFFIX)


# -- writing (the monitor) ---------------------------------------------------------------------
class RunFile:
    """A run's file: a lock that marks it live for `enforce_cap`, and a connection
    held only while there is something to write.

    WHY LAZY (issue 14): one monitor process watches every run of a launcher, and an
    open SQLite connection costs its page cache (and, in WAL mode, an mmap'ed -shm:
    about 100 KiB of the host's PSS per run) even while the run writes nothing.
    The writer calls `idle()` when a run's queue is drained: the connection closes;
    `conn` reopens it for the next batch and for the end. The lock fd stays open all
    run long: the file is never taken for a finished run's.

    WHY NOT WAL: a run's file has one writer, and every run opened it, went idle
    and reopened it at its end; in WAL mode each close checkpoints, and the switch
    to a plain file at the end checkpoints again: 2.5 ms of the host's CPU per run
    (0.8 ms with a truncated rollback journal; `_writer_conn`), on the one thread
    that writes every run's records. A reader (`sandbox audit`) now holds off the
    writer's commit for the length of one read (BUSY_MS at most), never longer."""

    def __init__(self, path: str, lock_fd: int, conn: sqlite3.Connection | None = None) -> None:
        self.path = path
        self.lock_fd = lock_fd
        st = os.fstat(lock_fd)
        self._key = (st.st_dev, st.st_ino)
        WRITING.add(self._key)
        # pinned: a fork of the monitor host (a broker) never closes or frees it, nor
        # plays its open transaction's journal back into the file (sandbox.sqlite_pin)
        self._conn = None if conn is None else sqlite_pin.pin(conn, path, self)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite_pin.pin(_writer_conn(self.path), self.path, self)
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def idle(self) -> None:
        """Close the connection until the next batch (the lock stays)."""
        c, self._conn = self._conn, None
        if c is not None:
            sqlite_pin.close(c)

    def close(self) -> None:
        try:
            self.conn.execute("PRAGMA journal_mode=DELETE")   # a plain file from now on
        except sqlite3.Error:
            pass
        self.idle()
        os.close(self.lock_fd)   # after the connection: closing it drops our POSIX locks too
        WRITING.discard(self._key)


# (st_dev, st_ino) of the run files this process writes (a RunFile not closed yet): the
# sweep never opens them (retention.py `_idle`). A forked child keeps the copy: it skips
# them too.
WRITING: set[tuple[int, int]] = set()


def _writer_conn(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_MS / 1000, check_same_thread=False,
                           isolation_level=None)
    try:
        # a rollback journal, truncated after each transaction (never WAL: see RunFile)
        conn.execute("PRAGMA journal_mode=TRUNCATE")
        conn.execute("PRAGMA synchronous=OFF")   # a crash loses the run's tail, never others'
    except BaseException:
        conn.close()
        raise
    return conn


def create_run(directory: str, run_id: str, *, policy: str, files: str, mode: str,
               argv: str | None, paths: str | None = None) -> RunFile:
    """The run's own file, with its `runs` row. Nobody else writes it."""
    ensure_dir(directory)
    path = run_file(directory, run_id)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    st = os.fstat(fd)
    WRITING.add((st.st_dev, st.st_ino))     # before SQLite takes any lock on it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        conn = _writer_conn(path)
        try:
            conn.executescript(SCHEMA)
            conn.execute("INSERT OR REPLACE INTO runs (run_id, started, policy, files, mode, "
                         "argv, paths) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (run_id, time.time(), policy, files, mode, argv, paths))
        except BaseException:
            conn.close()
            raise
    except BaseException:
        os.close(fd)
        WRITING.discard((st.st_dev, st.st_ino))
        raise
    return RunFile(path, fd, conn)


def end_run(conn: sqlite3.Connection, run_id: str, *, records: int, stored: int, dropped: int,
            not_stored: int, truncated: bool, summary: str) -> None:
    conn.execute("UPDATE runs SET ended = ?, records = ?, stored = ?, dropped = ?, "
                 "not_stored = ?, truncated = ?, summary = ? WHERE run_id = ?",
                 (time.time(), records, stored, dropped, not_stored, int(truncated), summary,
                  run_id))


def with_tx(conn: sqlite3.Connection, steps: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    conn.execute("BEGIN")
    try:
        for sql, rows in steps:
            if rows:
                conn.executemany(sql, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- reading -----------------------------------------------------------------------------------
class Store:
    """The store directory, read side: per-run connections opened on demand, read-only."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        self._conns: dict[str, sqlite3.Connection] = {}

    def run_ids(self) -> list[str]:
        """Run ids, most recently written first."""
        out = []
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        for name in names:
            if name.endswith(SUFFIX) and _RUN_ID.match(name[:-len(SUFFIX)]):
                try:
                    out.append((os.stat(os.path.join(self.dir, name)).st_mtime,
                                name[:-len(SUFFIX)]))
                except OSError:
                    pass
        return [rid for _, rid in sorted(out, reverse=True)]

    def conn(self, run_id: str) -> sqlite3.Connection:
        c = self._conns.get(run_id)
        if c is None:
            path = run_file(self.dir, run_id)
            c = sqlite_pin.pin(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                               timeout=BUSY_MS / 1000, check_same_thread=False),
                               path, self)
            self._conns[run_id] = c
        return c

    def close(self) -> None:
        for c in self._conns.values():
            sqlite_pin.close(c)
        self._conns.clear()


def connect(path: str | None = None, *, create: bool = False) -> Store:
    """The store at `path` (default: `default_path()`), for reading."""
    path = path or default_path()
    if create:
        ensure_dir(path)
    elif not os.path.isdir(path):
        from sandbox.errors import InputError
        raise InputError(f"no audit store at {path} (set SANDBOX_AUDIT_DB or run an "
                         "audited sandbox first)")
    return Store(path)


def runs(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rid in store.run_ids():
        if len(out) >= limit:
            break
        info = run_info(store, rid)
        if info is not None:
            info.pop("summary", None)
            info.pop("paths", None)
            out.append(info)
    out.sort(key=lambda r: r.get("started") or 0, reverse=True)
    return out


def run_info(store: Store, run_id: str) -> dict[str, Any] | None:
    try:
        cur = store.conn(run_id).execute("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        row = cur.fetchone()
    except (sqlite3.Error, ValueError):
        return None
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row))


def find_run(store: Store, prefix: str) -> str:
    """A full run id from a unique prefix (as git does with commits)."""
    from sandbox.errors import InputError
    from sandbox.printable import printable
    if not prefix or not _RUN_ID.match(prefix):
        raise InputError(f"not a run id: {printable(prefix)!r}")
    found = [rid for rid in store.run_ids() if rid.startswith(prefix)]
    if not found:
        raise InputError(f"no audited run {prefix!r} in the audit store {store.dir}")
    if len(found) > 1 and prefix not in found:
        raise InputError(f"run id prefix {prefix!r} is ambiguous")
    return prefix if prefix in found else found[0]


def records(store: Store, run_id: str, *, denied_only: bool = False
            ) -> Iterator[dict[str, Any]]:
    sql = f"SELECT {', '.join(COLUMNS)} FROM records"
    if denied_only:
        sql += " WHERE allowed = 0"
    for row in store.conn(run_id).execute(sql + " ORDER BY seq"):
        yield as_dict(run_id, row)


def as_dict(run_id: str, row: tuple[Any, ...]) -> dict[str, Any]:
    """A record for Python callers: path and flags as str (``surrogateescape``: lossless)."""
    d = dict(zip(COLUMNS, row))
    d["run_id"] = run_id
    d["verdict"] = "allowed" if d.pop("allowed") else "denied"
    d["time"] = d["first"]
    d["path"] = _text(d["path"])
    d["flags"] = None if d["flags"] is None else _text(d["flags"])
    return d


def _text(v: Any) -> str:
    return from_bytes(v) if isinstance(v, bytes) else str(v)

