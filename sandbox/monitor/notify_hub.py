"""One seccomp-notification thread per process, for every run it watches (issue 14).

Issue 14 puts every sandbox of a launcher under one monitor process. A thread
per run blocked in SECCOMP_IOCTL_NOTIF_RECV would be 50 threads for 50 runs;
instead one `Hub` thread waits on an epoll set of every attached run's
listener and hands each notification to that run's own decision code
(`notify_loop.AuditLoop.dispatch`: engine, paths, broker, records).

Fairness between runs (one run must not stall another):
- level-triggered epoll, ONE notification per ready listener per round: a run
  flooding from many threads gets one turn per round, like any other run. A
  run with the compiled fast path (notify_fast) keeps its turn only while
  nothing else is ready: its listener leaves the epoll set, and the C loop,
  which answers repeats of calls Python decided, waits with poll(2) on that
  listener AND this epoll descriptor, and returns when the latter is readable
  (any other run, broker reply or command), or after LINGER_MS of silence
  (`_linger`); after 64 calls it hands its records over and is served again
  at once, without an epoll round (still polling this descriptor before each
  call), unless its writer is congested;
- a call performed by a run's broker process (broker.py) never blocks the
  thread: `dispatch` returns a generator that yields the broker's socket, the
  hub stops reading that run's listener (its calls are serial, as before) and
  resumes the generator when the reply is readable. A broker stuck in an open
  of a FIFO or a connect to a full UNIX socket holds its own run only;
- back-pressure from a run's audit writer (sandbox/audit/writer.py) pauses
  only that run's listener, up to BACKPRESSURE_SECONDS, then its oldest
  surplus is shed and counted;
- everything else a notification costs is bounded per notification: a path
  read is at most 4 KiB from the caller's memory (userfaultfd, which could make
  that read wait, is denied by every filter), resolution is the kernel's
  (openat2 in the sandbox's root), answers never wait.

Cost (issue 11.7): the thread CPU (`time.thread_time`) is charged to the run
whose notifications (or broker replies) were handled, read at each switch from
one run to another and every CHARGE_EVERY notifications of the same run; a
run's `cpu` is therefore its own share, not the process's, and
`limits.monitor_cpu` stays true with 50 runs in one process.

The hub forgets a run when its listener hangs up (no task uses the filter and
nothing is pending) or when `detach` asks; only then may the run close the
listener. Registration changes are made on the hub's thread only (commands
queued and an eventfd kick), so the epoll set and the tables are touched by
one thread.
"""
from __future__ import annotations

import collections
import os
import select
import threading
import time
from dataclasses import dataclass
from typing import Any, Generator

from sandbox.audit.writer import BACKPRESSURE_SECONDS
from sandbox.latch import Latch
from sandbox.monitor.notify_fast import AGAIN
from sandbox.monitor.per_process import PerProcess

MAX_EVENTS = 64
CHARGE_EVERY = 64         # notifications of one run between two reads of the thread's clock
CONGESTION_EVERY = 64     # ... between two looks at its writer's backlog (HIGH_WATER is 200,000)
PAUSE_CHECK = 0.05        # seconds between looks at paused runs' writers
LINGER_MS = 50            # a fast-path run's silence before the hub goes back to epoll

Waiting = Generator[int, None, Any]


@dataclass(eq=False)
class _Slot:
    """What the hub holds per attached run (a few hundred bytes: see the module's test)."""
    run: Any
    fd: int                               # the run's listener
    watching: bool = False                # the listener is in the epoll set
    wait_fd: int | None = None            # a broker socket whose reply the run waits for
    call: Waiting | None = None           # ... and the call to resume then
    paused_until: float | None = None     # back-pressure deadline (monotonic)
    count: int = 0                        # notifications dispatched
    linger: bool = False                  # the run has the compiled fast path (`_linger`)


class Hub:
    def __init__(self) -> None:
        self._ep = select.epoll()
        self._kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ep.register(self._kick_fd, select.EPOLLIN)
        self._slots: dict[int, _Slot] = {}       # listener fd -> slot
        self._waits: dict[int, _Slot] = {}       # broker socket fd -> slot
        self._paused: set[_Slot] = set()
        self._cmds: collections.deque[tuple[str, Any]] = collections.deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last = 0.0
        self._current: _Slot | None = None     # the run the CPU since _last goes to
        self._since = 0

    # -- the runs' side ----------------------------------------------------------------------
    def attach(self, run: Any) -> None:
        """Start watching `run.fileno()`; `run.dispatch()` is called per notification."""
        run.hub_done = Latch()
        self._cmds.append(("add", run))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="seccomp-notify",
                                                daemon=True)
                self._thread.start()
        self._kick()

    def detach(self, run: Any, timeout: float) -> bool:
        """Stop watching `run` (after the notification in hand, if any); True once the
        hub has forgotten it, i.e. the run may close its listener."""
        done = getattr(run, "hub_done", None)
        if done is None or done.is_set():
            return True
        self._cmds.append(("remove", run))
        self._kick()
        return bool(done.wait(timeout))

    def runs(self) -> int:
        return len(self._slots)

    def _kick(self) -> None:
        try:
            os.eventfd_write(self._kick_fd, 1)
        except OSError:
            pass

    # -- the thread --------------------------------------------------------------------------
    def _serve(self) -> None:
        ep = self._ep
        slots = self._slots
        EPOLLIN = select.EPOLLIN
        self._last = time.thread_time()
        while True:
            try:
                events = ep.poll(PAUSE_CHECK if self._paused else -1, MAX_EVENTS)
            except InterruptedError:
                continue
            for fd, ev in events:
                try:
                    slot = slots.get(fd)
                    if slot is not None and ev & EPOLLIN and slot.watching:
                        # the hot path, inlined: one notification of a watched run
                        if slot is not self._current or self._since >= CHARGE_EVERY:
                            self._settle()
                            self._current = slot
                        self._since += 1
                        if slot.linger:
                            self._linger(slot)
                            continue
                        try:
                            out = slot.run.dispatch()
                        except Exception:  # dispatch answers its own failures
                            out = True
                        if out is True:
                            slot.count += 1
                            if not slot.count % CONGESTION_EVERY and slot.run.congested():
                                self._pause(slot)
                        else:
                            self._after(slot, out)
                    else:
                        self._event(fd, ev)
                except Exception:          # a bug must cost one run, never the thread:
                    slot = self._slots.get(fd) or self._waits.get(fd)
                    if slot is not None:   # forgotten, its listener closes at its end
                        self._forget(slot)  # and its waiting callers fail (ENOSYS)
            while self._cmds:
                what, run = self._cmds.popleft()
                if what == "add":
                    self._add(run)
                else:
                    found = next((s for s in self._slots.values() if s.run is run), None)
                    if found is not None:
                        self._forget(found)
                    else:
                        run.hub_done.set()
                # (these names held the last forgotten run until the next command came:
                # an ended run is freed as soon as the host lets go of it)
                found = run = None
            slot = None
            if self._paused:
                self._check_paused()

    def _linger(self, slot: _Slot) -> None:
        """A run with the compiled fast path (notify_fast): its listener leaves the epoll
        set while `dispatch` answers repeats in C, waiting with poll(2) on the listener
        and on this epoll descriptor -- so it returns as soon as anything else is ready
        (another run, a broker's reply, a command) or after LINGER_MS of silence; after
        MAX_BATCH calls (`AGAIN`) its records are replayed and it is served again
        without an epoll round. poll keeps SYNC_WAKE_UP's same-CPU wake-up, which epoll's
        callback drops (docs/benchmarks-journal.md)."""
        self._unwatch(slot)
        epfd, again = self._ep.fileno(), False
        while True:
            try:
                out = slot.run.dispatch(epfd, 0 if self._paused else LINGER_MS, again)
            except Exception:      # dispatch answers its own failures
                out = True
            slot.count += 1
            if out is not AGAIN:
                break
            # a full batch: more may be pending. Serve again at once (no epoll round, no
            # two epoll_ctl): the C loop still yields to anything else that is ready
            if slot.run.congested():
                out = True
                break
            if self._since >= CHARGE_EVERY:
                self._settle()
            self._since += 1
            again = True
        if out is True:
            if slot.run.congested():
                self._pause(slot)
            else:
                self._watch(slot)
        else:
            self._after(slot, out)

    def _event(self, fd: int, ev: int) -> None:
        """Anything but a notification of a watched run (that is `_serve`'s hot path)."""
        slot = self._slots.get(fd)
        if slot is not None and slot.watching:
            self._forget(slot)     # hung up with nothing pending: the run is over
            return
        slot = self._waits.get(fd)
        if slot is not None:
            self._resume(slot)
        elif fd == self._kick_fd:
            try:
                os.eventfd_read(self._kick_fd)
            except OSError:
                pass

    def _enter(self, slot: _Slot) -> None:
        """`slot`'s work starts: the thread CPU since the last settlement goes to the run
        that was working (a clock read is a system call, ~0.4 us: once per switch of run
        or per CHARGE_EVERY notifications, not per notification)."""
        if slot is not self._current or self._since >= CHARGE_EVERY:
            self._settle()
            self._current = slot
        self._since += 1

    def _settle(self) -> None:
        now = time.thread_time()
        if self._current is not None:
            self._current.run.cpu += now - self._last
        self._last = now
        self._since = 0

    def _after(self, slot: _Slot, out: "bool | Waiting") -> None:
        """What a dispatch asked: forget the run, wait for its broker, or pause it."""
        if out is False:
            self._forget(slot)
        elif out is not True:
            self._unwatch(slot)
            self._step(slot, out)
        elif slot.run.congested():
            self._pause(slot)

    def _step(self, slot: _Slot, call: Waiting) -> None:
        """Run the call to its next wait (a broker socket) or its end."""
        try:
            fd = call.send(None)
        except StopIteration:
            slot.call = slot.wait_fd = None
            if slot.run.congested():
                self._pause(slot)
            else:
                self._watch(slot)
            return
        except Exception:          # the call answers its own failures (notify_loop)
            slot.call = slot.wait_fd = None
            self._watch(slot)
            return
        slot.call, slot.wait_fd = call, fd
        try:
            self._ep.register(fd, select.EPOLLIN)
            self._waits[fd] = slot
        except OSError:            # the socket is already gone: resume at once (it fails)
            self._resume(slot, registered=False)

    def _resume(self, slot: _Slot, registered: bool = True) -> None:
        fd, call = slot.wait_fd, slot.call
        if fd is not None:
            self._waits.pop(fd, None)
            if registered:
                try:
                    self._ep.unregister(fd)
                except OSError:
                    pass
        slot.wait_fd = None
        if call is None:
            self._watch(slot)
            return
        self._enter(slot)
        self._step(slot, call)

    # -- registration (the hub's thread only) -------------------------------------------------
    def _add(self, run: Any) -> None:
        fd = run.fileno()
        slot = _Slot(run, fd, linger=bool(getattr(run, "lingers", False)))
        self._slots[fd] = slot
        self._watch(slot)

    def _watch(self, slot: _Slot) -> None:
        if not slot.watching and self._slots.get(slot.fd) is slot:
            try:
                self._ep.register(slot.fd, select.EPOLLIN)
                slot.watching = True
            except OSError:        # closed under us: the run is over
                self._forget(slot)

    def _unwatch(self, slot: _Slot) -> None:
        if slot.watching:
            slot.watching = False
            try:
                self._ep.unregister(slot.fd)
            except OSError:
                pass

    def _pause(self, slot: _Slot) -> None:
        self._unwatch(slot)
        slot.paused_until = time.monotonic() + BACKPRESSURE_SECONDS
        self._paused.add(slot)

    def _check_paused(self) -> None:
        now = time.monotonic()
        for slot in list(self._paused):
            if slot.run.relieved() or now >= (slot.paused_until or 0):
                if not slot.run.relieved():
                    slot.run.shed()    # the store is stuck: the oldest surplus, counted
                self._paused.discard(slot)
                slot.paused_until = None
                self._watch(slot)

    def _forget(self, slot: _Slot) -> None:
        if slot is self._current:
            self._settle()         # its CPU is complete before the run reads it
            self._current = None
        self._unwatch(slot)
        if self._slots.get(slot.fd) is slot:
            del self._slots[slot.fd]
        self._paused.discard(slot)
        if slot.wait_fd is not None:
            self._waits.pop(slot.wait_fd, None)
            try:
                self._ep.unregister(slot.wait_fd)
            except OSError:
                pass
        if slot.call is not None:
            try:
                slot.call.close()
            except Exception:
                pass
        slot.call = slot.wait_fd = None
        slot.run.hub_done.set()


def _forget(old: Hub) -> None:
    """In a forked child: close its copies of the parent's epoll set and kick descriptor
    only (the child must not touch the parent's hub)."""
    old._ep.close()
    try:
        os.close(old._kick_fd)
    except OSError:
        pass
    old._kick_fd = -1


# The process's hub (its thread starts with the first run attached); a forked child
# has no hub thread and makes its own if it ever watches a run.
_hub: PerProcess[Hub] = PerProcess(Hub, _forget)
hub = _hub.get
