"""The audit writer: ONE thread per process stores the records of every run it watches.

Issue 14 puts every sandbox of a launcher under one monitor process, so a thread
per run's store would be 50 threads for 50 runs. Each run keeps its own
`Writer` (its queue, its folding, its budget, its own SQLite file: the store's
isolation between runs is unchanged), and one shared thread (`WriterPool`)
drains them all in rounds of at most ``ROUND_BATCHES`` batches per run, so a
run that floods records cannot starve another run's store. A run's queue is
drained by one thread at a time (its lock), first in first out: its records
keep their order. A run whose queue stayed empty for a flush period holds no
SQLite connection (`RunFile.idle`); its next batch reopens it.

Back-pressure no longer blocks the producer: the notification hub
(sandbox/monitor/notify_hub.py) stops reading a run's listener while its queue
is `congested()` (the sandbox's next audited call waits, as before, and no
other run does), and after BACKPRESSURE_SECONDS sheds the oldest surplus,
counted as dropped. Producers the hub does not pause (the proxy's threads)
are bounded by HARD_LIMIT the same way. Nothing is lost silently.

Cost (issue 11.7): the CPU the shared thread spends on a run's records is
measured with `time.thread_time()` around that run's work and kept in
`Writer.cpu`; it is the run's, not the process's.
"""
from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any, Callable

from sandbox.audit.store import BUMP_RECORD, INSERT_RECORD, TEXT_PER_RECORD, with_tx
from sandbox.isolation import libc
from sandbox.latch import Latch
from sandbox.monitor import interned
from sandbox.monitor.per_process import PerProcess
from sandbox.printable import as_bytes

BATCH = 2000              # events per drain step
ROUND_BATCHES = 4         # batches of one run per round of the shared thread
FLUSH_SECONDS = 0.1       # the writer also flushes whatever waits this often
TRIM_SECONDS = 0.5        # the shared thread gives freed heap back at most this often
HIGH_WATER = 200_000      # queued events at which the hub stops reading that run's listener
BACKPRESSURE_SECONDS = 5.0  # longest it pauses before counting the oldest surplus as dropped
HARD_LIMIT = 2 * HIGH_WATER  # queued events past which a producer never paused sheds too
# Bytes one queued event holds (an 11-tuple, its float and ints, a path of up to
# 256 bytes; the op/syscall/rule strings are shared). Measured with tracemalloc in
# tests/test_notify_hub.py; used to report a run's peak backlog in bytes.
EVENT_BYTES = 640


class Writer:
    """One run's audit records: folded, budgeted and stored in its own file.

    The producer (the run's notification handling) calls `put(event)`: a deque
    append, no lock, no I/O. An event is ``(seq, time, pid, operation, syscall,
    path, flags, allowed, rule, enforced, result)``. The writer folds an event
    identical to an earlier one but for seq, pid and time into that row
    (count, last time); a new distinct record is stored while the run's budget
    lasts (`budget` rows, `budget * TEXT_PER_RECORD` bytes of path and flags),
    after that it is counted in `not_stored` and `truncated` is set. Whatever
    happens to a batch -- a store error, a value SQLite will not take -- the
    writer survives and `dropped` counts the lost events.
    """

    def __init__(self, opener: Callable[[], Any] | Any, *, budget: int = 50_000,
                 pool: "WriterPool | None" = None) -> None:
        """`opener` runs on the shared thread (file, schema, the run's row: several
        milliseconds), off the path of the sandbox's first notified syscall, while
        events already queue up."""
        self._opener = opener if callable(opener) else None
        self.file: Any = None if callable(opener) else opener
        self._opened = Latch()
        if self.file is not None:
            self._opened.set()
        self.budget = budget
        self.text_budget = budget * TEXT_PER_RECORD
        self.queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._taken = 0           # events taken from the queue by the drain
        self.stored = 0           # distinct rows written
        self.stored_events = 0    # events now in the store (rows and their repeats)
        self.not_stored = 0       # events past the budget
        self._dropped = 0         # events lost by the drain (store failures)
        self._shed = 0            # events shed by back-pressure (the producer's side)
        self.text_used = 0
        self.error: str | None = None
        self.cpu = 0.0            # thread CPU spent on this run's records, seconds
        self.queue_peak = 0       # the largest backlog seen, events
        self._keys: dict[tuple[Any, ...], int] = {}   # record -> seq of its row (<= budget)
        self._lock = threading.Lock()                  # one drain at a time
        self._shed_lock = threading.Lock()
        self._closed = False
        self._ending = False    # `ending`: the store's connection stays open from now on
        self._pool = pool if pool is not None else shared()
        self._pool.add(self)

    @property
    def conn(self) -> Any:
        return self.file.conn if self.file is not None else None

    @property
    def truncated(self) -> bool:
        return self.not_stored > 0

    @property
    def dropped(self) -> int:
        return self._dropped + self._shed

    @property
    def events(self) -> int:
        """Events taken from the queue: drained, or shed by back-pressure."""
        return self._taken + self._shed

    def put(self, event: tuple[Any, ...]) -> None:
        q = self.queue
        q.append(event)
        n = len(q)
        if n >= BATCH and n % BATCH == 0:
            self._pool.wake()
            if n >= HARD_LIMIT:
                self.shed()

    def put_run(self, event: tuple[Any, ...], count: int, last: float) -> None:
        """`count` consecutive events identical to `event` but for seq (one each, from
        `event`'s on) and time (`event`'s the first, `last` the last): stored, budgeted
        and counted exactly as `count` calls of `put` (tests/test_notify_fast_runs.py),
        for one queue entry. Everything that counts events weighs it `count`. The
        audit's compiled loop reports its runs of repeats so (monitor/notify_fast.py)."""
        q = self.queue
        q.append((*event, count, last))
        n = len(q)
        if n >= BATCH and n % BATCH == 0:
            self._pool.wake()
            if n >= HARD_LIMIT:
                self.shed()

    def ending(self) -> None:
        """The run's last process is gone: its store is about to be finished (`close`,
        then the run's closing row). The shared thread stores what is queued and opens
        the file's connection now, if it was idle, and keeps it open: reopening it
        there cost the run's report ~0.4 ms."""
        self._ending = True
        self._pool.wake()

    # -- back-pressure (the hub's side) --------------------------------------------------------
    def congested(self) -> bool:
        return len(self.queue) >= HIGH_WATER

    def relieved(self) -> bool:
        return len(self.queue) < HIGH_WATER // 2

    def shed(self) -> int:
        """Drop the oldest surplus down to HIGH_WATER // 2, counted; how many went."""
        q, gone = self.queue, 0
        with self._shed_lock:       # the hub and a proxy thread may both shed
            while len(q) > HIGH_WATER // 2:
                try:
                    ev = q.popleft()
                except IndexError:
                    break
                gone += _weight(ev)
            self._shed += gone
        return gone

    # -- the shared thread's side --------------------------------------------------------------
    def step(self, max_batches: int | None = ROUND_BATCHES) -> bool:
        """Open the file if not yet, store up to `max_batches` batches; more queued?"""
        with self._lock:
            if self._closed:
                return False
            t0 = time.thread_time()
            try:
                self._ensure_open()
                if self._ending:        # the run's end comes next: its connection, open
                    self._reopen()
                elif not self.queue:    # a whole flush period with nothing to store:
                    self._idle()        # hold no SQLite connection while the run is quiet
                    return False
                return self._drain(max_batches)
            finally:
                self.cpu += time.thread_time() - t0

    def _ensure_open(self) -> None:
        if self._opened.is_set():
            return
        # the opener goes once it ran: its closure holds what only the file's first row
        # needs (the run's policy as JSON, ~2.5 KiB), for the host's lifetime of the run
        opener, self._opener = self._opener, None
        try:
            self.file = opener() if opener is not None else self.file
        except Exception as exc:  # reported in the summary; events are counted as dropped
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._opened.set()

    def _reopen(self) -> None:
        if self.file is not None and not getattr(self.file, "is_open", True):
            try:
                self.file.conn      # the property opens it
            except Exception as exc:   # reported; the closing row tries again
                self.error = f"{type(exc).__name__}: {exc}"

    def _idle(self) -> None:
        idle = getattr(self.file, "idle", None)
        if idle is not None and getattr(self.file, "is_open", True):
            try:
                idle()
            except Exception as exc:   # reported; the next batch reopens
                self.error = f"{type(exc).__name__}: {exc}"
            self._pool.freed()

    def _fold(self, batch: list[tuple[Any, ...]]
              ) -> tuple[list[tuple[Any, ...]], dict[int, list[float]]]:
        """New rows and {seq: [repeats, last time]} of one batch; budget applied. An
        entry of `put_run` is its `count` events: a new row takes the first and counts
        the rest as its repeats; past the budget all `count` are not stored."""
        new: list[tuple[Any, ...]] = []
        bumps: dict[int, list[float]] = {}
        keys = self._keys
        for ev in batch:
            if len(ev) == 11:
                seq, ts, pid, op, syscall, path, flags, allowed, rule, enforced, result = ev
                count, last = 1, ts
            else:
                seq, ts, pid, op, syscall, path, flags, allowed, rule, enforced, result, \
                    count, last = ev
            key = (op, syscall, path, flags, allowed, rule, enforced, result)
            first = keys.get(key)
            if first is not None:
                b = bumps.get(first)
                if b is None:
                    bumps[first] = [count, last]
                else:
                    b[0] += count
                    b[1] = last
                continue
            pb = as_bytes(path)
            fb = None if flags is None else as_bytes(flags)
            size = len(pb) + (len(fb) if fb else 0)
            if len(keys) >= self.budget or self.text_used + size > self.text_budget:
                self.not_stored += count
                continue
            key = _KEYS.hold(key)   # runs of one program fold the same records: one key
            keys[key] = seq
            self.text_used += size
            new.append((seq, ts, ts, 1, pid, op, syscall, pb, fb, 1 if allowed else 0, rule,
                        enforced, result))
            if count > 1:
                bumps[seq] = [count - 1, last]
        return new, bumps

    def _store(self, new: list[tuple[Any, ...]], bumps: dict[int, list[float]]) -> None:
        conn = self.conn
        assert conn is not None
        rows = [(int(n), last, seq) for seq, (n, last) in bumps.items()]
        try:
            with_tx(conn, [(INSERT_RECORD, new), (BUMP_RECORD, rows)])
            self.stored += len(new)
            self.stored_events += len(new) + sum(r[0] for r in rows)
            return
        except Exception as exc:   # one bad value must not cost the batch: row by row
            self.error = f"{type(exc).__name__}: {exc}"
        for sql, items, weight in ((INSERT_RECORD, new, lambda r: 1), (BUMP_RECORD, rows, lambda r: r[0])):
            for item in items:
                try:
                    conn.execute(sql, item)
                    self.stored_events += weight(item)
                    if sql is INSERT_RECORD:
                        self.stored += 1
                except Exception as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    self._dropped += weight(item)

    def _drain(self, max_batches: int | None) -> bool:
        """Called with the lock held. True when events are left for the next round."""
        q = self.queue
        if len(q) > self.queue_peak:
            self.queue_peak = len(q)
        if self.file is None:
            if self._opened.is_set():  # the store could not be opened: count, do not keep
                n = 0
                while q:
                    n += _weight(q.popleft())
                self._dropped += n
                self._taken += n
            return False
        done = 0
        while q and (max_batches is None or done < max_batches):
            done += 1
            batch = []
            pop = q.popleft
            try:
                for _ in range(BATCH):
                    batch.append(pop())
            except IndexError:
                pass
            events = sum(map(_weight, batch))
            self._taken += events
            try:
                new, bumps = self._fold(batch)
                self._store(new, bumps)
            except Exception as exc:   # never dies; the batch is counted as lost
                self.error = f"{type(exc).__name__}: {exc}"
                self._dropped += events
        return bool(q)

    def close(self) -> None:
        """Store everything queued (on the caller's thread, after any round in progress);
        the shared thread forgets this run."""
        self._pool.remove(self)
        self._pool.freed()      # its file's connection closes next (RunFile.close)
        with self._lock:
            t0 = time.thread_time()
            try:
                self._closed = True
                self._ensure_open()
                self._drain(None)
            finally:
                self.cpu += time.thread_time() - t0

    def wait_open(self) -> Any:
        self._opened.wait()
        return self.file


# Every run's fold keys, each held once (`interned.Table`): a key is ~110 bytes, and a
# run of `ls` folds ~40 of them, the same as the run before it (issue 14: the host's
# growth per live run). Folded by the dict's equality, as `keys` already does. The
# shared thread and a run's `close` (its caller's thread) both fold (see `Table`).
_KEYS = interned.Table()


def _weight(entry: tuple[Any, ...]) -> int:
    """How many events a queue entry is: 1, or a `put_run`'s count."""
    return 1 if len(entry) == 11 else int(entry[11])


class WriterPool:
    """The one thread that drains every live run's `Writer`, round by round.

    WHY IT TRIMS: each run's SQLite connection costs ~120 KiB of the C heap while
    open (lookaside, page cache), allocated on this thread's malloc arena. glibc
    gives an arena's memory back only from its top, so once a burst of runs went
    idle, their freed connections stayed in the process's private pages: ~37 KiB
    per live run in the monitor host under `strict` (issue 14's 64 KiB). After a
    round in which connections closed, the thread calls malloc_trim, at most once
    per TRIM_SECONDS: it walks every arena, ~0.8 ms after fifty connections
    closed and ~40 us when nothing was freed (measured here)."""

    def __init__(self) -> None:
        self._writers: list[Writer] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._trim_due = False          # a connection closed since the last trim
        self._trim_next = 0.0           # monotonic time of the next allowed trim

    def add(self, w: Writer) -> None:
        with self._lock:
            self._writers.append(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="audit-writer",
                                                daemon=True)
                self._thread.start()
        self._wake.set()        # open its file now, off the notification path

    def remove(self, w: Writer) -> None:
        with self._lock:
            try:
                self._writers.remove(w)
            except ValueError:
                pass

    def wake(self) -> None:
        self._wake.set()

    def count(self) -> int:
        return len(self._writers)

    def freed(self) -> None:
        """A run's connection closed (or is about to): trim the heap soon."""
        self._trim_due = True

    def _trim(self) -> None:
        now = time.monotonic()
        if self._trim_due and now >= self._trim_next:
            self._trim_due = False
            self._trim_next = now + TRIM_SECONDS
            libc.malloc_trim()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_SECONDS if self._writers or self._trim_due else None)
            self._wake.clear()
            more = True
            while more:
                with self._lock:
                    writers = list(self._writers)
                more = False
                for w in writers:
                    try:
                        more = w.step() or more
                    except Exception:   # step counts its own failures; never die
                        pass
            self._trim()


# The process's writer pool (one thread, started with the first run); a forked child
# has no writer thread and starts its own pool if it ever needs one.
_shared: PerProcess[WriterPool] = PerProcess(WriterPool)
shared = _shared.get
