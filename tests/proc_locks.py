"""The POSIX locks a process holds on a file, as /proc/locks lists them: how the tests
of SQLite files judge that nothing of ours dropped SQLite's locks (closing any
descriptor of a file drops every POSIX lock its process holds on it)."""
from __future__ import annotations

import os

PENDING_BYTE = 0x40000000            # SQLite's lock bytes on a database file
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_FIRST = PENDING_BYTE + 2


def posix_locks(path: str, kind: str, start: int, pid: int | None = None) -> list[str]:
    """The lines of /proc/locks for `pid`'s (default: this process's) POSIX locks of
    `kind` (READ or WRITE) on `path` that start at byte `start`."""
    st = os.stat(path)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return [line for line in f
                if (x := line.split())[1] == "POSIX" and x[3] == kind
                and x[4] == str(pid or os.getpid()) and x[5] == ident and x[6] == str(start)]
