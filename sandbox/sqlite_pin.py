"""SQLite connections that only the process that opened them ever closes.

WHY: a fork copies every connection object of the parent into the child, with
SQLite's state for it (the locks it believes it holds, its open transaction,
its -shm mapping) but not the POSIX locks, which stay the parent's. Whatever
closes that copy in the child -- a dropped reference, the cyclic GC, the
interpreter's teardown at exit -- runs SQLite's close there: a rollback that
plays its journal back into the file the parent is still writing, or, once it
gets a lock the parent does not hold, a checkpoint and the deletion of the WAL
and -shm by name under the parent's live connection. After the child closed
or reused its inherited descriptors (close_fds, closerange), that close locks,
writes and closes whatever file now has those numbers.

So each connection is pinned (`pin`): one reference to it is leaked on purpose
for as long as the process that opened it keeps it open, and `close` is a no-op
in any other process. In a forked child an inherited connection is never
deallocated, used or closed; it costs the child the copy of its memory, nothing
more. The owner closes it with `close`, when its owning object is collected, or
at exit (`weakref.finalize`), as the connection's own dealloc did before.

`inherited(path)` says whether this process is such a child for that file:
SQLite keeps one lock state per file per process, so while an inherited
connection to it exists here, a connection the child opens to the same file
believes it holds the inherited locks and takes none (measured: the child's
records lost when the parent closed its connection, which checkpointed and
deleted the WAL the child was writing to). Such a child must use the file
from a fresh process (sandbox.history_proxy).
"""
from __future__ import annotations

import ctypes
import os
import sqlite3
import weakref

_incref = ctypes.pythonapi.Py_IncRef
_decref = ctypes.pythonapi.Py_DecRef
_incref.argtypes = _decref.argtypes = [ctypes.py_object]
_incref.restype = _decref.restype = None

# id(connection) -> (owner pid, st_dev, st_ino, finalizer); a forked child keeps the
# parent's entries (a copy of this dict): they are what `inherited` finds. No lock: a
# lock another thread held at the fork would stay held in the child; each dict
# operation here is atomic under the GIL.
_PINNED: dict[int, tuple[int, int, int, weakref.finalize]] = {}


def pin(con: sqlite3.Connection, path: str, owner: object) -> sqlite3.Connection:
    """Pin `con` (opened on `path`) to this process; closed when `owner` is collected
    or at exit, if not before by `close`. Returns `con`."""
    try:
        st = os.stat(path)
        dev, ino = st.st_dev, st.st_ino
    except OSError:
        dev = ino = 0
    fin = weakref.finalize(owner, close, con)
    _incref(con)
    _PINNED[id(con)] = (os.getpid(), dev, ino, fin)
    return con


def close(con: sqlite3.Connection) -> None:
    """Close `con` if this process pinned it; in any other (a forked child), or if it
    is not pinned (closed already), leave it as it is."""
    entry = _PINNED.get(id(con))
    if entry is None or entry[0] != os.getpid() or _PINNED.pop(id(con), None) is None:
        return
    entry[3].detach()
    try:
        con.close()
    finally:
        _decref(con)


def inherited(path: str) -> bool:
    """Whether this process holds a connection to the file at `path` that another
    process (the parent it was forked from) opened and had not closed at the fork."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    me = os.getpid()
    return any(pid != me and (dev, ino) == (st.st_dev, st.st_ino)
               for pid, dev, ino, _ in list(_PINNED.values()))
