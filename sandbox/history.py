"""Run history: every top-level run's RunResult, kept in the state directory.

    $SANDBOX_HOME/history/runs.sqlite      (default ~/.local/state/sandbox/history/)

The directory is created 0700 and the database 0600 (before SQLite first opens
it: no window where another user could open it), and the launcher masks the
directory from every sandbox's view, so a sandboxed program can neither read
earlier runs' argv, stores and logs nor forge its own record.

The launcher records each run as it ends (`Launcher(history=False)` turns it
off); `sandbox runs list|show|logs|rm` reads it and `sandbox gc` prunes it.
Retention: records (and the run directories the launcher made under
``$SANDBOX_HOME/runs/``) older than DEFAULT_RETENTION go at the next record
after an hour has passed since the last sweep, or with `sandbox gc --older-than`.
Recording never fails a run: a history that cannot be written is skipped; one that
SQLite finds damaged (`HistoryDamaged`) is left as it is,
and not opened again for a minute (`History.damaged` says why).
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from sandbox.errors import InputError, SandboxError

DEFAULT_RETENTION = 30 * 86400.0      # seconds
SWEEP_EVERY = 3600.0
BUSY_TIMEOUT_MS = 5000
DAMAGED_RETRY = 60.0    # seconds before a file SQLite found damaged is tried again
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class HistoryDamaged(SandboxError):
    """The run-history file is damaged: the run was not recorded (never its status)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    started    REAL NOT NULL,
    ended      REAL NOT NULL,
    kind       TEXT NOT NULL,          -- exec | workflow
    command    TEXT NOT NULL,          -- argv (JSON) or the workflow's name
    policy     TEXT,
    status     TEXT NOT NULL,
    exit_code  INTEGER,
    signal     INTEGER,
    wall_time  REAL NOT NULL,
    output_dir TEXT,
    own_output INTEGER NOT NULL,       -- 1: the launcher made output_dir (gc may remove it)
    result     TEXT NOT NULL           -- RunResult.to_dict() as JSON
);
CREATE INDEX IF NOT EXISTS runs_ended ON runs(ended);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def state_dir() -> str:
    from sandbox.launcher.prepare import state_dir as base
    return base()


def history_dir() -> str:
    return os.path.join(state_dir(), "history")


def default_path() -> str:
    return os.path.join(history_dir(), "runs.sqlite")


def runs_dir() -> str:
    """Where the launcher makes each run's default output directory."""
    return os.path.join(state_dir(), "runs")


@dataclass(frozen=True)
class Entry:
    run_id: str
    started: float
    ended: float
    kind: str
    command: str
    policy: str | None
    status: str
    exit_code: int | None
    signal: int | None
    wall_time: float
    output_dir: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _private_file(path: str) -> None:
    """Create `path` 0600 (and its directory 0700) if missing, as every state file is:
    the directory by `private_dir` (never a top-level one, so a HOME that does not
    exist is an error, not created), the file by `private_file` (O_NOFOLLOW, a
    regular singly linked file of the caller's)."""
    from sandbox.launcher.output_path import private_dir, private_file
    private_dir(os.path.dirname(path), what="run history directory", empty=False,
                system_check=False)
    private_file(path, what="run history")


class History:
    """The run-history database. Reads and maintenance use one short-lived
    connection per operation; `record`, which runs once per run on the caller's
    return path, keeps one writer connection (`_writer`): closing the last
    connection checkpoints the WAL into the database with an fsync, which cost
    a run about 16 ms (of 1.3 ms CPU) on this machine's ext4. Other threads and
    processes may write at once (WAL, busy timeout)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_path()
        self._lock = threading.Lock()
        self._con: sqlite3.Connection | None = None
        self._con_key: tuple[int, int, int] = (0, 0, 0)   # (pid, st_dev, st_ino)
        # A file SQLite found damaged fails every record: it is left alone (it is the
        # user's, and may be repaired) and not opened again for DAMAGED_RETRY seconds,
        # each record raising HistoryDamaged instead. Not a hint of the run's: the
        # CLI prints hints on the program's stderr, which is the program's alone.
        self._damaged: tuple[float, str] | None = None   # (retry after, why)

    @property
    def damaged(self) -> str | None:
        """Why records are being skipped (a damaged file), or None."""
        return self._damaged[1] if self._damaged is not None else None

    def _writer(self) -> sqlite3.Connection:
        """The writer connection (call with `_lock` held), opened again when the file
        it has is no longer the one at `path` (removed or replaced, e.g. by a test or
        `rm`: a write to the old inode would be lost) or after a fork (a connection
        must never be used in a forked child; the child's copy is left alone, never
        closed here)."""
        try:
            st = os.stat(self.path)
            key = (os.getpid(), st.st_dev, st.st_ino)
        except OSError:
            key = (0, 0, 0)
        if self._con is not None and key == self._con_key:
            return self._con
        self._drop()
        con = self._connect(create=True)
        st = os.stat(self.path)
        self._con, self._con_key = con, (os.getpid(), st.st_dev, st.st_ino)
        return con

    def close(self) -> None:
        """Close the writer connection (the WAL is checkpointed then); `record` opens
        it again if needed."""
        with self._lock:
            self._drop()

    def _connect(self, create: bool) -> sqlite3.Connection:
        if create:
            _private_file(self.path)
        elif not os.path.exists(self.path):
            raise InputError(f"no run history at {self.path} (runs are recorded as they end)")
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                              check_same_thread=False)   # the writer serves every thread
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(_SCHEMA)
        return con

    # -- writing ---------------------------------------------------------------
    def record(self, result: Any, *, kind: str, command: str, own_output: bool,
               retention: float | None = DEFAULT_RETENTION) -> None:
        ended = time.time()
        data = result.to_dict()
        with self._lock:
            if self._damaged is not None and time.monotonic() < self._damaged[0]:
                raise HistoryDamaged(self._damaged[1])
            try:
                self._write(result, data, ended, kind, command, own_output, retention)
            except sqlite3.Error as exc:
                self._drop()      # the next record starts on a fresh connection
                if getattr(exc, "sqlite_errorcode", None) not in _DAMAGED:
                    raise
                why = (f"this run is not in the run history: {self.path} is damaged "
                       f"({exc}); move it away (a new one is made) or run with "
                       "history=False")
                self._damaged = (time.monotonic() + DAMAGED_RETRY, why)
                raise HistoryDamaged(why) from None
            self._damaged = None

    def _drop(self) -> None:
        if self._con is not None and self._con_key[0] == os.getpid():
            self._con.close()
        self._con = None

    def _write(self, result: Any, data: dict[str, Any], ended: float, kind: str,
               command: str, own_output: bool, retention: float | None) -> None:
        con = self._writer()
        con.execute(
            "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (result.run_id, ended - result.wall_time, ended, kind, command, result.policy,
             str(result.status), result.exit_code, result.signal, result.wall_time,
             result.output_dir, int(own_output), json.dumps(data, default=str)))
        if retention is not None:
            row = con.execute("SELECT value FROM meta WHERE key='last_sweep'").fetchone()
            if row is None or ended - float(row["value"]) > SWEEP_EVERY:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('last_sweep', ?)",
                            (str(ended),))
                self._sweep(con, ended - retention)

    def gc(self, older_than: float) -> list[str]:
        """Forget runs that ended more than `older_than` seconds ago and remove the
        run directories the launcher made for them; also empty leftover run
        directories. Returns the run ids removed."""
        con = self._connect(create=True)
        try:
            return self._sweep(con, time.time() - older_than)
        finally:
            con.close()

    def remove(self, run_ids: list[str]) -> list[str]:
        for prefix in run_ids:
            _check_id(prefix)
        con = self._connect(create=False)
        try:
            gone = []
            for prefix in run_ids:
                entry = self._one(con, prefix)
                self._forget(con, entry.run_id)
                gone.append(entry.run_id)
            return gone
        finally:
            con.close()

    def _sweep(self, con: sqlite3.Connection, before: float) -> list[str]:
        ids = [r["run_id"] for r in con.execute("SELECT run_id FROM runs WHERE ended < ?",
                                                (before,))]
        for run_id in ids:
            self._forget(con, run_id)
        _remove_old_run_dirs(before)
        return ids

    def _forget(self, con: sqlite3.Connection, run_id: str) -> None:
        row = con.execute("SELECT own_output FROM runs WHERE run_id=?", (run_id,)).fetchone()
        con.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
        if row is not None and row["own_output"]:
            _remove_run_dir(run_id)

    # -- reading ---------------------------------------------------------------
    def list(self, limit: int = 50, status: str | None = None) -> list[Entry]:
        if not os.path.exists(self.path):
            return []
        con = self._connect(create=False)
        try:
            sql = "SELECT * FROM runs" + (" WHERE status=?" if status else "") + \
                  " ORDER BY ended DESC LIMIT ?"
            rows = con.execute(sql, ((status,) if status else ()) + (limit,)).fetchall()
            return [_entry(r) for r in rows]
        finally:
            con.close()

    def get(self, run_id: str) -> tuple[Entry, dict[str, Any]]:
        """(entry, RunResult dict) of a run id or unique prefix; InputError if none."""
        _check_id(run_id)
        con = self._connect(create=False)
        try:
            entry = self._one(con, run_id)
            row = con.execute("SELECT result FROM runs WHERE run_id=?",
                              (entry.run_id,)).fetchone()
            return entry, json.loads(row["result"])
        finally:
            con.close()

    def _one(self, con: sqlite3.Connection, prefix: str) -> Entry:
        _check_id(prefix)
        rows = con.execute("SELECT * FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
                           (prefix, prefix + "g")).fetchall()
        if not rows:
            raise InputError(f"no run {prefix!r} in the run history ({self.path})")
        if len(rows) > 1:
            raise InputError(f"run id prefix {prefix!r} is ambiguous: give more characters")
        return _entry(rows[0])


def _check_id(prefix: str) -> None:
    if not prefix or len(prefix) > 32 or not all(c in "0123456789abcdef" for c in prefix):
        raise InputError(f"{prefix!r} is not a run id (hexadecimal, or a unique prefix)")


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(**{k: row[k] for k in Entry.__dataclass_fields__})


def _remove_run_dir(run_id: str) -> None:
    if len(run_id) != 32 or not all(c in "0123456789abcdef" for c in run_id):
        return                      # never a path built from anything but a run id
    shutil.rmtree(os.path.join(runs_dir(), run_id), ignore_errors=True)


def _run_dirs() -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(runs_dir()) as it:
            yield from (e for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return


def _remove_old_run_dirs(before: float) -> None:
    """Run directories last changed before `before` that hold nothing (an empty
    output directory at most): what older versions left by the thousand."""
    for e in _run_dirs():
        try:
            if e.stat(follow_symlinks=False).st_mtime >= before:
                continue
            remove_if_empty(os.path.join(e.path, "output"))
            os.rmdir(e.path)
        except OSError:
            pass


def remove_if_empty(output_dir: str) -> bool:
    """Remove a run's output directory (and the run directory holding it) if the
    run left nothing in it. True when it was removed."""
    try:
        os.rmdir(output_dir)
    except OSError:
        return False
    parent = os.path.dirname(output_dir)
    if os.path.dirname(parent) == runs_dir():
        try:
            os.rmdir(parent)
        except OSError:
            pass
    return True
