"""The audit store directory kept under its size cap: the oldest finished runs deleted.

The cap is `$SANDBOX_AUDIT_MAX_BYTES` (default 1 GiB, `store.max_bytes`); each audited
run's monitor calls `sweep` once it opened its own file (monitor/notify_store.py).
What must hold:

- **A run still written is never deleted**, nor the run that sweeps: a file whose
  flock is held by a monitor (or that this process writes: `store.WRITING`) is
  skipped (`_idle`), without opening it when it is ours (closing any descriptor of
  it would drop the POSIX locks its SQLite connection holds).
- **The monitor host's memory does not grow with the store**: the directory is read
  as a stream, and only what will be deleted is held (`enforce_cap`).
- **A sweep costs at most 1/SWEEP_SHARE of a CPU**: it runs when none ran for a
  period that grows with the last sweep's CPU (`sweep_due`), stamped in the
  directory so every monitor of the user shares it.

Split from store.py, which writes and reads the runs' files.
"""
from __future__ import annotations

import fcntl
import os
import time

from sandbox.audit.store import SUFFIX, WRITING

SWEEP_SECONDS = 10.0      # a run sweeps the directory for the cap if nobody did for this long
SWEPT = ".swept"          # the stamp of the last sweep (its mtime; its text: the CPU it took)
SWEEP_SHARE = 100         # the period is at least this many times the last sweep's CPU...
SWEEP_MAX = 600.0         # ...and at most this (what a stamp can say never stops sweeps)

SWEEP_BATCH = 512          # runs one round of a cap sweep may hold to delete
SWEEP_ROUNDS = 8           # rounds of a sweep at most (a run still written is skipped)


def enforce_cap(directory: str, cap: int, keep: str | None = None) -> int:
    """Delete the oldest finished runs until the directory holds at most `cap` bytes.

    A run whose monitor still writes (its file is flock'ed) is never deleted,
    nor `keep`. Returns the number of runs deleted.

    WHY STREAMED: the sweep runs in the monitor host (issue 14: one process for every
    run of a launcher, whose own memory may grow by at most 64 KiB per run). Listing
    the directory of a store kept at its cap (50,000 runs here) put ~20 MiB of names
    and (mtime, path) tuples on the host's heap at every sweep; freed after,
    but the pages they took stayed the host's, pinned by the live runs' objects
    allocated among them (host growth measured at 266-420 KiB per live run instead
    of ~80). Now the directory is read twice as a stream (the total, then the
    oldest runs covering the excess, at most SWEEP_BATCH at once in a heap): what
    is held is what will be deleted."""
    total = _dir_bytes(directory)
    if total is None or total <= cap:
        return 0
    deleted = 0
    skipped: set[str] = set()
    for _ in range(SWEEP_ROUNDS):
        batch = _oldest_covering(directory, total - cap, skipped | {keep or ""})
        if not batch:
            break
        for p in batch:
            if total <= cap:
                break
            if not _idle(p):
                skipped.add(p)       # live: never deleted (bounded: live runs)
                continue
            for q in (p, p + "-wal", p + "-shm", p + "-journal"):
                try:
                    size = os.lstat(q).st_size
                    os.unlink(q)
                    total -= size
                except OSError:
                    pass
            deleted += 1
        if total <= cap:
            break
    return deleted


def _dir_bytes(directory: str) -> int | None:
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except OSError:
        return None
    return total


def _oldest_covering(directory: str, excess: int, skip: set[str]) -> list[str]:
    """The oldest run files (by mtime, oldest first) whose sizes add up to `excess`, at
    most SWEEP_BATCH of them: a max-heap of the newest kept, popped while the others
    still cover the excess."""
    import heapq
    heap: list[tuple[int, str, int]] = []    # (-mtime_ns, path, size)
    kept = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.name.endswith(SUFFIX):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if entry.path in skip:
                    continue
                heapq.heappush(heap, (-st.st_mtime_ns, entry.path, st.st_size))
                kept += st.st_size
                while heap and (len(heap) > SWEEP_BATCH or kept - heap[0][2] >= excess):
                    kept -= heapq.heappop(heap)[2]
    except OSError:
        return []
    return [p for _, p, _ in sorted(heap, reverse=True)]


def sweep_due(directory: str, every: float = SWEEP_SECONDS) -> bool:
    """Is a cap sweep due? True at most about once per period per directory: `every`
    seconds, or SWEEP_SHARE times the CPU the last sweep took if that is longer
    (SWEEP_MAX at most).

    A sweep lists and stats every file of the store: with tens of thousands of
    runs kept that is hundreds of milliseconds, which every run used to pay
    before its report (the writer's join), and which still took ~3% of a CPU of
    the monitor host every 10 s with 50,000 runs kept (docs/benchmarks-journal.md). The
    period grows with the store, so a sweep costs at most 1/SWEEP_SHARE of one
    CPU. Between two sweeps the directory can outgrow the cap only by what the
    runs of that period write, each bounded by its own record budget. A stamp
    dated in the future, or saying anything but a sane figure, does not stop
    sweeps for longer than SWEEP_MAX."""
    stamp = os.path.join(directory, SWEPT)
    now = time.time()
    try:
        if abs(now - os.lstat(stamp).st_mtime) < _period(stamp, every):
            return False
    except OSError:
        pass
    try:
        fd = os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.utime(fd, (now, now))
        finally:
            os.close(fd)
    except OSError:
        pass   # still sweep: the stamp only saves time
    return True


def _period(stamp: str, every: float) -> float:
    """The sweep period the stamp's text (the last sweep's CPU seconds) asks for."""
    try:
        fd = os.open(stamp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return every
    try:
        took = float(os.read(fd, 32).decode("ascii"))
    except (OSError, ValueError, UnicodeDecodeError):
        return every
    finally:
        os.close(fd)
    if not took > 0:    # NaN too
        return every
    return min(SWEEP_MAX, max(every, SWEEP_SHARE * took))


def sweep(directory: str, cap: int, keep: str | None = None) -> int | None:
    """`enforce_cap` if a sweep is due (`sweep_due`), its CPU written into the stamp
    for the next period; the runs deleted, or None when none was due."""
    if not sweep_due(directory):
        return None
    t0 = time.thread_time()
    deleted = enforce_cap(directory, cap, keep)
    took = time.thread_time() - t0
    try:
        fd = os.open(os.path.join(directory, SWEPT),
                     os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.write(fd, f"{took:.6f}".encode())
        finally:
            os.close(fd)
    except OSError:
        pass   # the next period is then the default one
    return deleted


def _idle(path: str) -> bool:
    """Whether no monitor writes the run file at `path` (its flock is free). A file this
    process writes is not opened: closing any descriptor of it would drop the POSIX
    locks its SQLite connection holds (a RESERVED lock mid-transaction: a reader could
    then play the writer's journal back under it; tests/test_audit_sweep_locks.py)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) in WRITING:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
