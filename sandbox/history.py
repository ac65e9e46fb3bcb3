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

Forks: every connection is pinned to the process that opened it
(sandbox.sqlite_pin): a forked child never closes, frees or uses its copy, and
while it holds one, its own operations on that file run in a fresh interpreter
(sandbox.history_proxy), where SQLite takes the locks it believes it holds.

Size: a new file has incremental auto_vacuum; the hourly sweep gives the pages of
the records it deletes back (`PRAGMA incremental_vacuum`), and `sandbox gc` also
converts an older file (one VACUUM) and truncates the WAL, so the file shrinks.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Concatenate, Iterator, ParamSpec, TypeVar, cast

from sandbox import sqlite_pin
from sandbox.errors import InputError, SandboxError

DEFAULT_RETENTION = 30 * 86400.0      # seconds
SWEEP_EVERY = 3600.0
BUSY_TIMEOUT_MS = 5000
DAMAGED_RETRY = 60.0    # seconds before a file SQLite found damaged is tried again
AUTO_VACUUM_INCREMENTAL = 2   # what PRAGMA auto_vacuum reads for INCREMENTAL
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


ROW_MAX = 1 << 20      # characters of a run's stored result; its bulky parts are cut to fit
_BULKY = ("logs", "stdout", "stderr", "store", "denied", "nested", "rejected",
          "handler_errors")


def result_json(result: dict[str, Any]) -> str:
    """The result as the history keeps it: whole up to ROW_MAX characters; past that,
    each bulky part keeps what fits in its share (a list its first items, a text its
    start, a store its first keys) and `history_trimmed` says how much of each went.

    WHY: a run could send 64 MiB of log records (the launcher's own bound on what a
    result holds), and each became a row of the history: 60 MB per run for 30 days,
    outside every per-run disk bound (found by an attacker's probe). The caller's
    own result (`--result`, the API) is whole; only the history's copy is cut."""
    text = json.dumps(result, default=str)
    if len(text) <= ROW_MAX:
        return text
    share = ROW_MAX // (2 * len(_BULKY))
    cut, trimmed = dict(result), {}
    for key in _BULKY:
        value = cut.get(key)
        if isinstance(value, str) and len(value) > share:
            cut[key], trimmed[key] = value[:share], len(value) - share
        elif isinstance(value, (list, dict)):
            items = list(value.items()) if isinstance(value, dict) else list(value)
            kept, used = [], 0
            for item in items:
                used += len(json.dumps(item, default=str)) + 2
                if used > share:
                    break
                kept.append(item)
            if len(kept) < len(items):
                cut[key] = dict(kept) if isinstance(value, dict) else kept
                trimmed[key] = len(items) - len(kept)
    cut["history_trimmed"] = trimmed
    text = json.dumps(cut, default=str)
    if len(text) > ROW_MAX:      # a bulky part elsewhere: keep the summary fields only
        text = json.dumps({k: v for k, v in cut.items()
                           if not isinstance(v, (list, dict, str)) or len(
                               json.dumps(v, default=str)) <= share}, default=str)
    return text


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
    regular singly linked file of the caller's).

    An existing file is checked by lstat, never opened: closing any descriptor of it
    would drop every POSIX lock this process holds on it, SQLite's included, while
    another connection to it (another History of the same file) is open here; the
    WAL and -shm were then deleted under that connection and the file was damaged
    (tests/test_history_locks.py). Nothing else of ours opens the file, its -wal or
    its -shm by name: only SQLite does."""
    from sandbox.launcher.output_path import private_dir, private_file
    private_dir(os.path.dirname(path), what="run history directory", empty=False,
                system_check=False)
    private_file(path, what="run history", open_existing=False)


P = ParamSpec("P")
R = TypeVar("R")


def _fresh_if_inherited(method: Callable[Concatenate[History, P], R]
                        ) -> Callable[Concatenate[History, P], R]:
    """`method` as is, or, in a forked child holding its parent's connection to the
    file, run in a fresh interpreter (sandbox.history_proxy: module docstring)."""
    @functools.wraps(method)
    def run(self: History, *args: P.args, **kwargs: P.kwargs) -> R:
        if sqlite_pin.inherited(self.path):
            from sandbox import history_proxy
            return cast(R, history_proxy.call(self.path, method.__name__, args, kwargs))
        return method(self, *args, **kwargs)
    return run


def damaged_why(path: str, exc: sqlite3.Error) -> str:
    return f"{path} is damaged ({exc}); move it away (a new one is made)"


def _damage_explained(method: Callable[Concatenate[History, P], R]
                      ) -> Callable[Concatenate[History, P], R]:
    """`method`, with a file SQLite finds damaged (SQLITE_CORRUPT / NOTADB) reported as
    HistoryDamaged, which says where and what to do (the CLI prints it on one line),
    instead of SQLite's bare "database disk image is malformed"."""
    @functools.wraps(method)
    def run(self: History, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) not in _DAMAGED:
                raise
            raise HistoryDamaged(f"the run history {damaged_why(self.path, exc)}") from None
    return run


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
        `rm`: a write to the old inode would be lost). Never called in a forked child
        that holds its parent's connection (`_fresh_if_inherited`)."""
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
        """A connection pinned to this process (closed with `sqlite_pin.close`)."""
        if create:
            _private_file(self.path)
        elif not os.path.exists(self.path):
            raise InputError(f"no run history at {self.path} (runs are recorded as they end)")
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                              check_same_thread=False)   # the writer serves every thread
        sqlite_pin.pin(con, self.path, self)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")   # a new file only (gc converts)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
        except BaseException:
            sqlite_pin.close(con)
            raise
        return con

    # -- writing ---------------------------------------------------------------
    def record(self, result: Any, *, kind: str, command: str, own_output: bool,
               retention: float | None = DEFAULT_RETENTION) -> None:
        ended = time.time()
        row = (result.run_id, ended - result.wall_time, ended, kind, command, result.policy,
               str(result.status), result.exit_code, result.signal, result.wall_time,
               result.output_dir, int(own_output), result_json(result.to_dict()))
        self.record_row(row, retention)

    @_fresh_if_inherited
    def record_row(self, row: tuple[Any, ...], retention: float | None) -> None:
        """`record` of a row made of the result (also what sandbox.history_proxy runs)."""
        with self._lock:
            if self._damaged is not None and time.monotonic() < self._damaged[0]:
                raise HistoryDamaged(self._damaged[1])
            try:
                self._write(row, retention)
            except sqlite3.Error as exc:
                self._drop()      # the next record starts on a fresh connection
                if getattr(exc, "sqlite_errorcode", None) not in _DAMAGED:
                    raise
                why = (f"this run is not in the run history: {damaged_why(self.path, exc)}"
                       " or run with history=False")
                self._damaged = (time.monotonic() + DAMAGED_RETRY, why)
                raise HistoryDamaged(why) from None
            self._damaged = None

    def _drop(self) -> None:
        """Forget the writer; closed only in the process that opened it (in a forked
        child `sqlite_pin.close` leaves the parent's connection as it is)."""
        if self._con is not None:
            sqlite_pin.close(self._con)
        self._con = None

    def _write(self, row: tuple[Any, ...], retention: float | None) -> None:
        con = self._writer()
        con.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        ended = float(row[2])
        if retention is not None:
            last = con.execute("SELECT value FROM meta WHERE key='last_sweep'").fetchone()
            if last is None or ended - float(last["value"]) > SWEEP_EVERY:
                con.execute("INSERT OR REPLACE INTO meta VALUES ('last_sweep', ?)",
                            (str(ended),))
                if self._sweep(con, ended - retention):
                    _give_back(con)

    @_damage_explained
    @_fresh_if_inherited
    def gc(self, older_than: float) -> list[str]:
        """Forget runs that ended more than `older_than` seconds ago and remove the
        run directories the launcher made for them; also empty leftover run
        directories. Returns the run ids removed. The file shrinks: its free pages
        are given back (a file made before incremental auto_vacuum is converted by
        one VACUUM) and the WAL is checkpointed and truncated."""
        con = self._connect(create=True)
        try:
            gone = self._sweep(con, time.time() - older_than)
            if con.execute("PRAGMA auto_vacuum").fetchone()[0] != AUTO_VACUUM_INCREMENTAL:
                con.execute("PRAGMA auto_vacuum=INCREMENTAL")
                con.execute("VACUUM")
            elif gone:
                _give_back(con)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return gone
        finally:
            sqlite_pin.close(con)

    @_damage_explained
    @_fresh_if_inherited
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
            if gone:
                _give_back(con)
            return gone
        finally:
            sqlite_pin.close(con)

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
    @_damage_explained
    @_fresh_if_inherited
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
            sqlite_pin.close(con)

    @_damage_explained
    @_fresh_if_inherited
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
            sqlite_pin.close(con)

    def _one(self, con: sqlite3.Connection, prefix: str) -> Entry:
        _check_id(prefix)
        rows = con.execute("SELECT * FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
                           (prefix, prefix + "g")).fetchall()
        if not rows:
            raise InputError(f"no run {prefix!r} in the run history ({self.path})")
        if len(rows) > 1:
            raise InputError(f"run id prefix {prefix!r} is ambiguous: give more characters")
        return _entry(rows[0])


def _give_back(con: sqlite3.Connection) -> None:
    """Free pages leave the file (at the next checkpoint, in WAL mode). Stepped to the
    end by executescript: `execute` steps the pragma once, which frees one page."""
    con.executescript("PRAGMA incremental_vacuum")


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


def serve_one() -> int:
    """The fresh interpreter's side of sandbox.history_proxy.call: one pickled
    (path, method, args, kwargs) on stdin, (ok, value or exception) on stdout."""
    import pickle
    import sys
    path, method, args, kwargs = pickle.loads(sys.stdin.buffer.read())
    try:
        answer = pickle.dumps((True, getattr(History(path), method)(*args, **kwargs)))
    except Exception as exc:
        try:
            answer = pickle.dumps((False, exc))
        except Exception:
            answer = pickle.dumps((False, SandboxError(str(exc))))
    sys.stdout.buffer.write(answer)
    return 0
