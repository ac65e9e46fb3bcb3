"""The service's store: SQLite in WAL mode, in the state directory (0700, file 0600).

One connection, one lock: SQLite serialises writers anyway, and every
statement here is short. The schema has a version (PRAGMA user_version) and
an ordered list of migrations; a store made by an older version is migrated
on open, one made by a newer one is refused (it cannot be read safely).

Secret environment values never reach this module: the request stored is
the one with `secret_env` removed (sandbox.service.runs).
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from sandbox import sqlite_pin
from sandbox.errors import InputError
from sandbox.service.models import DEFAULT_CEILING

# The largest integer SQLite stores: a sequence number a client gives back (a cursor,
# an event id) is checked against it, or binding it raises OverflowError (a 500)
MAX_SEQ = (1 << 63) - 1


def seq_of(text: str | None) -> int | None:
    """`text` as a sequence number this store could have given (ASCII digits, at most
    MAX_SEQ), else None. str.isdigit alone takes '²', which int() refuses."""
    text = (text or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= MAX_SEQ else None


MIGRATIONS: tuple[str, ...] = (
    # 1: runs, tokens, events
    """
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
        ceiling TEXT, max_concurrent INTEGER NOT NULL, max_queued INTEGER NOT NULL,
        rate REAL, admin INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL, revoked_at REAL);
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE, token_id TEXT NOT NULL, status TEXT NOT NULL,
        kind TEXT NOT NULL, request TEXT NOT NULL, policy TEXT,
        created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0, retries INTEGER NOT NULL DEFAULT 0,
        reason TEXT, result TEXT, host TEXT NOT NULL, idem_key TEXT,
        has_secrets INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX runs_status ON runs(status, seq);
    CREATE INDEX runs_token ON runs(token_id, seq);
    CREATE UNIQUE INDEX runs_idem ON runs(token_id, idem_key) WHERE idem_key IS NOT NULL;
    CREATE TABLE events (
        run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
        data TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (run_id, seq));
    """,
    # 2: retention (sandbox gc, --retain) finds ended runs by their end time
    """
    CREATE INDEX runs_finished ON runs(finished_at) WHERE finished_at IS NOT NULL;
    """,
    # 3: settings the server was started with that offline tools apply (retention)
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 4: the scale-out queues a token may name (NULL: any a live worker serves)
    """
    ALTER TABLE tokens ADD COLUMN queues TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(InputError):
    """The store cannot be used (newer schema, bad file)."""


@dataclass
class RunRow:
    seq: int
    id: str
    token_id: str
    status: str
    kind: str
    request: dict[str, Any]
    policy: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    retries: int
    reason: str | None
    result: dict[str, Any] | None
    host: str
    idem_key: str | None
    has_secrets: bool


@dataclass
class TokenRow:
    id: str
    name: str
    hash: str
    ceiling: str | None
    max_concurrent: int
    max_queued: int
    rate: float | None
    admin: bool
    created_at: float
    revoked_at: float | None
    queues: list[str] | None = None   # None: any queue a live worker serves


@dataclass(frozen=True)
class RunHead:
    """The few columns the queues, the report stream and the owner checks need: a
    run's whole row holds its request and its result (megabytes of output), and
    these are read many times a second."""
    id: str
    token_id: str
    status: str
    attempts: int
    started_at: float | None
    host: str


_HEAD_COLS = "id, token_id, status, attempts, started_at, host"
_RUN_COLS = ("seq, id, token_id, status, kind, request, policy, created_at, started_at, "
             "finished_at, attempts, retries, reason, result, host, idem_key, has_secrets")


BULKY = ("stdout", "stderr", "logs", "store")
# a listing's request: what a run's view shows of it (its argv, labels and workflow's
# name), made by SQLite: a request may hold megabytes (env, a workflow, its store)
_BRIEF_REQUEST = ("json_object('argv', json_extract(request, '$.argv'), "
                  "'labels', json_extract(request, '$.labels'), "
                  "'workflow', CASE WHEN kind='workflow' THEN json_object('name', "
                  "COALESCE(json_extract(request, '$.workflow.name'), 'workflow')) END)")
_BRIEF_COLS = _RUN_COLS.replace(
    " result,", " json_remove(result, " + ", ".join(f"'$.{k}'" for k in BULKY) + "),").replace(
    " request,", f" {_BRIEF_REQUEST},")
assert "json_remove" in _BRIEF_COLS and "json_object" in _BRIEF_COLS


def _run(row: tuple[Any, ...]) -> RunRow:
    r = list(row)
    r[5] = json.loads(r[5])
    r[13] = json.loads(r[13]) if r[13] is not None else None
    r[16] = bool(r[16])
    return RunRow(*r)


def _token(row: tuple[Any, ...]) -> TokenRow:
    r = list(row)
    r[7] = bool(r[7])
    if not r[7] and not r[3]:    # a tenant row from before every tenant had a ceiling
        r[3] = DEFAULT_CEILING
    r[10] = json.loads(r[10]) if r[10] is not None else None
    return TokenRow(*r)


def _private(path: str) -> None:
    """Create the store file 0600 if missing; an existing one is checked by lstat and
    never opened: closing any descriptor of it would drop every POSIX lock this
    process holds on it, SQLite's for another Store of the file included
    (tests/test_service_store_locks.py)."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600))
        return
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, "the service store is a symlink; it is never followed",
                      path)
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.chmod(path, 0o600)


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        _private(path)
        # pinned: a forked child of the server never closes or frees it (sandbox.sqlite_pin)
        self._db = sqlite_pin.pin(sqlite3.connect(path, check_same_thread=False,
                                                  isolation_level=None, timeout=30), path, self)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.migrate()

    # -- schema ----------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        with self._lock:
            have = self.version
            if have > SCHEMA_VERSION:
                raise StoreError(f"{self.path}: the store has schema version {have}, this "
                                 f"sandbox knows up to {SCHEMA_VERSION}; upgrade sandbox")
            for number in range(have, SCHEMA_VERSION):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in MIGRATIONS[number].split(";"):
                        if stmt.strip():
                            self._db.execute(stmt)
                    self._db.execute(f"PRAGMA user_version = {number + 1}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def close(self) -> None:
        with self._lock:
            sqlite_pin.close(self._db)

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _x(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # -- tokens ----------------------------------------------------------------
    def add_token(self, t: TokenRow) -> None:
        self._x("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (t.id, t.name, t.hash, t.ceiling, t.max_concurrent, t.max_queued, t.rate,
                 int(t.admin), t.created_at, t.revoked_at,
                 json.dumps(t.queues) if t.queues is not None else None))

    def token_by_hash(self, digest: str) -> TokenRow | None:
        rows = self._q("SELECT * FROM tokens WHERE hash=?", (digest,))
        return _token(rows[0]) if rows else None

    def token(self, token_id: str) -> TokenRow | None:
        rows = self._q("SELECT * FROM tokens WHERE id=?", (token_id,))
        return _token(rows[0]) if rows else None

    def tokens(self) -> list[TokenRow]:
        return [_token(r) for r in self._q("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_token(self, ident: str) -> bool:
        """Revoke by id or name (every live token of that name)."""
        return self._x("UPDATE tokens SET revoked_at=? WHERE (id=? OR name=?) "
                       "AND revoked_at IS NULL", (time.time(), ident, ident)) > 0

    def revoked_token_ids(self) -> set[str]:
        """Every revoked token's id: the server polls this to notice a revocation
        `sandbox token revoke` wrote into the store (one small indexed read)."""
        return {str(r[0]) for r in self._q("SELECT id FROM tokens WHERE revoked_at IS NOT NULL")}

    def unfinished(self, token_id: str) -> list[tuple[str, str]]:
        """(run id, status) of the token's queued and running runs, oldest first."""
        return [(str(a), str(b)) for a, b in self._q(
            "SELECT id, status FROM runs WHERE token_id=? AND status IN ('queued', 'running') "
            "ORDER BY seq", (token_id,))]

    # -- runs ------------------------------------------------------------------
    def insert_run(self, r: RunRow) -> RunRow:
        """Persist a new queued run (before the 202); an idempotency key already
        used by this token returns the run it made instead."""
        with self._lock:
            if r.idem_key is not None:
                old = self.run_by_idem(r.token_id, r.idem_key)
                if old is not None:
                    return old
            cur = self._db.execute(
                f"INSERT INTO runs ({_RUN_COLS}) VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (r.id, r.token_id, r.status, r.kind, json.dumps(r.request), r.policy,
                 r.created_at, r.started_at, r.finished_at, r.attempts, r.retries, r.reason,
                 None if r.result is None else json.dumps(r.result), r.host, r.idem_key,
                 int(r.has_secrets)))
            r.seq = int(cur.lastrowid or 0)
            return r

    def run_by_idem(self, token_id: str, key: str) -> RunRow | None:
        rows = self._q(f"SELECT {_RUN_COLS} FROM runs WHERE token_id=? AND idem_key=?",
                       (token_id, key))
        return _run(rows[0]) if rows else None

    def run(self, run_id: str) -> RunRow | None:
        rows = self._q(f"SELECT {_RUN_COLS} FROM runs WHERE id=?", (run_id,))
        return _run(rows[0]) if rows else None

    def run_head(self, run_id: str) -> RunHead | None:
        rows = self._q(f"SELECT {_HEAD_COLS} FROM runs WHERE id=?", (run_id,))
        return RunHead(*rows[0]) if rows else None

    def heads(self, status: str, limit: int = -1) -> list[RunHead]:
        """Runs in `status`, oldest first, without request or result: the queues scan
        the running ones several times a second."""
        return [RunHead(*r) for r in self._q(
            f"SELECT {_HEAD_COLS} FROM runs WHERE status=? ORDER BY seq LIMIT ?",
            (status, limit))]

    def running_per_token(self) -> dict[str, int]:
        return {t: int(n) for t, n in self._q(
            "SELECT token_id, COUNT(*) FROM runs WHERE status='running' GROUP BY token_id")}

    def generation(self) -> tuple[int, int]:
        """Changes so far: this connection's writes, and another process's commits (the
        CLI's `token revoke`, `gc`); equal twice, nothing in the store changed."""
        with self._lock:
            return (self._db.total_changes,
                    int(self._db.execute("PRAGMA data_version").fetchone()[0]))

    def list_runs(self, *, token_id: str | None = None, status: str | None = None,
                  since: float | None = None, until: float | None = None,
                  after_seq: int | None = None, limit: int = 50,
                  brief: bool = False) -> list[RunRow]:
        """Newest first; `after_seq` continues below that seq (cursor pagination).
        `brief`: each result without its `BULKY` parts, left in the database (a run's
        output is up to 16 MiB a stream: a listing of 500 held gigabytes), and of
        its request only argv, labels and the workflow's name."""
        where, args = [], []
        for cond, val in (("token_id=?", token_id), ("status=?", status),
                          ("created_at>=?", since), ("created_at<?", until),
                          ("seq<?", after_seq)):
            if val is not None:
                where.append(cond)
                args.append(val)
        sql = f"SELECT {_BRIEF_COLS if brief else _RUN_COLS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        return [_run(r) for r in self._q(sql, (*args, limit))]

    def count(self, status: str, token_id: str | None = None) -> int:
        if token_id is None:
            return int(self._q("SELECT COUNT(*) FROM runs WHERE status=?", (status,))[0][0])
        return int(self._q("SELECT COUNT(*) FROM runs WHERE status=? AND token_id=?",
                           (status, token_id))[0][0])

    def counts(self) -> dict[str, int]:
        return {s: int(n) for s, n in
                self._q("SELECT status, COUNT(*) FROM runs GROUP BY status")}

    def queued(self) -> list[tuple[str, str]]:
        """(run id, token id) of every queued run, oldest first."""
        return [(a, b) for a, b in
                self._q("SELECT id, token_id FROM runs WHERE status='queued' ORDER BY seq")]

    def claim(self, run_id: str, started_at: float) -> int | None:
        """queued -> running, with a new attempt number (the fence for later writes);
        None when someone else claimed or cancelled it first."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT attempts FROM runs WHERE id=? AND status='queued'",
                                        (run_id,)).fetchall()
                if not rows:
                    self._db.execute("COMMIT")
                    return None
                attempt = int(rows[0][0]) + 1
                self._db.execute("UPDATE runs SET status='running', started_at=?, attempts=? "
                                 "WHERE id=?", (started_at, attempt, run_id))
                self._db.execute("COMMIT")
                return attempt
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def finish(self, run_id: str, attempt: int | None, status: str, reason: str | None,
               result: dict[str, Any] | None, finished_at: float) -> bool:
        """Record the end of a run. `attempt` fences it: a write from an attempt that
        is no longer current (re-queued, lost) changes nothing. attempt None: a run
        that never started (cancelled while queued)."""
        if attempt is None:
            return self._x("UPDATE runs SET status=?, reason=?, result=?, finished_at=? "
                           "WHERE id=? AND status='queued'",
                           (status, reason, None if result is None else json.dumps(result),
                            finished_at, run_id)) > 0
        return self._x("UPDATE runs SET status=?, reason=?, result=?, finished_at=? "
                       "WHERE id=? AND attempts=? AND status='running'",
                       (status, reason, None if result is None else json.dumps(result),
                        finished_at, run_id, attempt)) > 0

    def recover(self, now: float) -> tuple[list[str], list[str]]:
        """After a restart: every 'running' run lost its executor. Those with retries
        left go back to the queue, the others end 'lost'. Returns (requeued, lost)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT id, attempts, retries FROM runs "
                                        "WHERE status='running'").fetchall()
                requeued, lost = [], []
                for run_id, attempts, retries in rows:
                    if attempts <= retries:
                        self._db.execute("UPDATE runs SET status='queued', started_at=NULL "
                                         "WHERE id=?", (run_id,))
                        requeued.append(run_id)
                    else:
                        self._db.execute(
                            "UPDATE runs SET status='lost', finished_at=?, reason=? WHERE id=?",
                            (now, "its executor (the server) died while it ran; "
                             "no retries were allowed", run_id))
                        lost.append(run_id)
                self._db.execute("COMMIT")
                return requeued, lost
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def set_result(self, run_id: str, result: dict[str, Any]) -> None:
        self._x("UPDATE runs SET result=? WHERE id=?", (json.dumps(result), run_id))

    def mark_started(self, run_id: str, attempt: int, host: str, at: float | None) -> bool:
        """A worker on `host` started `attempt` (scale-out: the claim was the dispatch,
        recorded with no host and no start time)."""
        return self._x("UPDATE runs SET host=?, started_at=? WHERE id=? AND attempts=? "
                       "AND status='running'", (host, at, run_id, attempt)) > 0

    def requeue(self, run_id: str, attempt: int) -> bool:
        """running -> queued when `attempt` lost its executor and retries are left
        (attempts <= retries); False otherwise (the caller then ends it lost)."""
        return self._x("UPDATE runs SET status='queued', started_at=NULL WHERE id=? "
                       "AND attempts=? AND status='running' AND attempts<=retries",
                       (run_id, attempt)) > 0

    def fail_queued(self, run_id: str, status: str, reason: str, now: float) -> bool:
        return self._x("UPDATE runs SET status=?, reason=?, finished_at=? "
                       "WHERE id=? AND status='queued'", (status, reason, now, run_id)) > 0

    def finished_before(self, cutoff: float) -> list[str]:
        return [r[0] for r in self._q("SELECT id FROM runs WHERE finished_at IS NOT NULL "
                                      "AND finished_at < ?", (cutoff,))]

    def delete_run(self, run_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events WHERE run_id=?", (run_id,))
            self._db.execute("DELETE FROM runs WHERE id=?", (run_id,))

    # -- settings ----------------------------------------------------------------
    def set_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self._x("DELETE FROM settings WHERE key=?", (key,))
        else:
            self._x("INSERT OR REPLACE INTO settings VALUES (?,?)", (key, value))

    def setting(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM settings WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    # -- events ----------------------------------------------------------------
    def add_event(self, run_id: str, seq: int, type_: str, data: dict[str, Any],
                  at: float) -> None:
        self._x("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?)",
                (run_id, seq, type_, json.dumps(data), at))

    def events(self, run_id: str, after: int = 0, limit: int = -1
               ) -> list[tuple[int, str, dict[str, Any], float]]:
        """The run's events after seq `after`, at most `limit` of them (-1: all)."""
        return [(int(seq), type_, json.loads(data), float(at)) for seq, type_, data, at in
                self._q("SELECT seq, type, data, at FROM events WHERE run_id=? AND seq>? "
                        "ORDER BY seq LIMIT ?", (run_id, after, limit))]

    def last_event_seq(self, run_id: str) -> int:
        rows = self._q("SELECT MAX(seq) FROM events WHERE run_id=?", (run_id,))
        return int(rows[0][0] or 0)
