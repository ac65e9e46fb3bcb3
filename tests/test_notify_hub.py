"""One notification thread for every run of a process (issue 14): no run stalls another,
no run's records reach another's audit, and each run's monitor cost is its own.

The runs are real: forked children under the seccomp layer of their policy,
each with its real `AuditLoop` and store, all attached to ONE hub
(tests/notify_hub_harness.py). Judged from the host side: the children's exit,
the runs' stores, the loops' accounting.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import tracemalloc

import pytest

from sandbox.monitor.notify_hub import Hub
from notify_hub_harness import (HANG_GUARD, HubRun, audit_policy, end_flood, guarded_policy,
                                records, until as _until, wait_exit as _wait_exit)

pytestmark = pytest.mark.isolation

LONG = "/tmp/hub-flood/" + "a/" * 2000     # ~4 KiB: the longest path a read takes


def _flood(threads: int = 8):
    def body():
        def spin():
            while True:
                try:
                    os.close(os.open(LONG, os.O_RDONLY))
                except OSError:
                    pass
        for _ in range(threads - 1):
            threading.Thread(target=spin, daemon=True).start()
        spin()
    return body


def _opens(tag: str, n: int):
    def body():
        for i in range(n):
            try:
                os.close(os.open(f"/tmp/hub-{tag}-{i}", os.O_RDONLY))
            except OSError:
                pass
    return body


def _own_paths(db: str, run_id: str, tag: str, n: int) -> list[dict]:
    recs = records(db, run_id)
    mine = [r for r in recs if r["path"].startswith(f"/tmp/hub-{tag}-")]
    assert [r["path"] for r in mine] == [f"/tmp/hub-{tag}-{i}" for i in range(n)], \
        "every open recorded once, in the order it was made"
    assert all(r["count"] == 1 for r in mine)
    return recs


def test_a_flooding_run_does_not_stall_another_runs_audited_opens(tmp_path):
    """Eight threads of one run open 4 KiB paths without pause; another run on the same
    hub still gets every open answered and recorded."""
    db = str(tmp_path / "audit")
    hub = Hub()
    flooder = HubRun(hub, audit_policy(), "flooder", db, _flood())
    victim = None
    try:
        flooder.go()
        _until(lambda: flooder.loop.tally.checked >= 500, "the flood did not start")
        victim = HubRun(hub, audit_policy(), "victim", db, _opens("victim", 300))
        victim.go()
        assert _wait_exit(victim, [flooder]) == 0
        assert flooder.loop.tally.checked > 500          # still flooding meanwhile
        audit, _ = victim.finish()
        assert audit.errors == 0 and audit.dropped == 0 and audit.vanished == 0, audit
        recs = _own_paths(db, "victim", "victim", 300)
        assert not [r for r in recs if r["path"].startswith("/tmp/hub-flood")]
    finally:
        end_flood(flooder, victim)
    flooder.finish()
    fl = records(db, "flooder")
    assert any(r["path"].startswith("/tmp/hub-flood/a/a/") and r["count"] > 100 for r in fl)
    assert not [r for r in fl if r["path"].startswith("/tmp/hub-victim")]   # not the victim's
    assert hub.runs() == 0


def test_runs_sharing_a_hub_never_mix_records(tmp_path):
    db = str(tmp_path / "audit")
    hub = Hub()
    runs = [HubRun(hub, audit_policy(), f"run{k}", db, _opens(f"r{k}", 400)) for k in range(3)]
    for r in runs:
        r.go()
    for r in runs:
        assert _wait_exit(r, runs) == 0
    for k, r in enumerate(runs):
        audit, _ = r.finish()
        assert audit.errors == 0 and audit.dropped == 0, audit
        assert audit.records == audit.stored_events + audit.not_stored + audit.dropped
        recs = _own_paths(db, f"run{k}", f"r{k}", 400)
        assert not [x for x in recs if x["path"].startswith("/tmp/hub-r")
                    and not x["path"].startswith(f"/tmp/hub-r{k}-")], "another run's record"
        assert r.loop.cpu > 0                               # its own share of the thread
    _until(lambda: hub.runs() == 0, "the hub still holds finished runs")


def test_a_broker_stuck_in_a_fifo_open_holds_only_its_own_run(tmp_path):
    """A run whose policy has a guarded tree opens a FIFO there: its broker blocks in
    open(2) until a writer comes (none does). Another run on the same hub still gets
    every open answered and recorded."""
    tree = tmp_path / "guarded"
    tree.mkdir()
    fifo = tree / "fifo"
    os.mkfifo(fifo)
    db = str(tmp_path / "audit")
    hub = Hub()
    pol, plan = guarded_policy(str(tree))

    def open_fifo():
        os.open(str(fifo), os.O_RDONLY)      # blocks in the broker, for ever

    stuck = HubRun(hub, pol, "stuck", db, open_fifo, fs_plan=plan)
    try:
        assert stuck.loop.broker is not None and stuck.loop.broker.guarded
        stuck.go()
        _until(lambda: stuck.loop.broker.pid is not None and stuck.loop.broker.process
               is not None, "the broker never started")
        time.sleep(0.2)                      # the broker is now inside open(2)
        victim = HubRun(hub, audit_policy(), "victim", db, _opens("v", 200))
        victim.go()
        assert _wait_exit(victim, [stuck]) == 0
        victim.finish()
        _own_paths(db, "victim", "v", 200)
        assert stuck.loop.tally.brokered == 0          # still waiting for its broker
    finally:
        stuck.kill()
        stuck.wait()
    audit, _ = stuck.finish()
    assert audit.brokered == 1, audit                  # ended (EPERM) when the run did
    assert hub.runs() == 0


class _StuckCall:
    """A run whose one notification waits for a broker that never answers."""

    def __init__(self) -> None:
        self.ready_r, self.ready_w = socket.socketpair()
        self.broker_ours, self.broker_theirs = socket.socketpair()
        self.cpu = 0.0
        self.closed = threading.Event()
        self.ready_w.send(b"n")      # one notification pending

    def fileno(self) -> int:
        return self.ready_r.fileno()

    def dispatch(self):
        self.ready_r.recv(1)

        def call():
            try:
                yield self.broker_ours.fileno()    # never readable: the broker is stuck
            finally:
                self.closed.set()
        return call()

    def congested(self) -> bool:
        return False


def test_a_broker_call_that_never_returns_holds_only_its_own_run(tmp_path):
    """What a brokered open of a FIFO (or a connect to a full UNIX socket) does: the
    hub waits for the reply with every other listener, and forgets the call when the
    run is detached."""
    db = str(tmp_path / "audit")
    hub = Hub()
    stuck = _StuckCall()
    hub.attach(stuck)
    _until(lambda: not _readable(stuck.ready_r), "the stuck call was not dispatched")
    victim = HubRun(hub, audit_policy(), "victim", db, _opens("v", 200))
    victim.go()
    assert _wait_exit(victim, []) == 0
    victim.finish()
    _own_paths(db, "victim", "v", 200)
    assert hub.detach(stuck, 5.0)
    assert stuck.closed.is_set()                           # the call was ended, not leaked


def _readable(s: socket.socket) -> bool:
    try:
        return bool(s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


def test_the_hub_holds_little_per_attached_run(tmp_path):
    """Per-run memory of the hub itself (its slot and epoll entry), measured."""
    hub = Hub()
    runs = []
    for k in range(20):
        a, b = socket.socketpair()
        runs.append((a, b))
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        fakes = []
        for a, _ in runs:
            f = _Idle(a)
            hub.attach(f)
            fakes.append(f)
        _until(lambda: hub.runs() == len(fakes), "not attached")
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grew = sum(s.size_diff for s in after.compare_to(before, "filename")
               if "notify_hub" in s.traceback[0].filename or "threading" in
               s.traceback[0].filename)
    per_run = grew / len(fakes)
    print(f"hub: {per_run / 1024:.2f} KiB per attached run")
    assert per_run < 4096, per_run
    for f in fakes:
        assert hub.detach(f, 5.0)
    for a, b in runs:
        a.close()
        b.close()


class _Idle:
    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.cpu = 0.0

    def fileno(self) -> int:
        return self.s.fileno()


def test_event_bytes_bounds_a_queued_audit_event():
    """`monitor_peak_memory` counts a run's audit backlog at EVENT_BYTES per event."""
    from sandbox.audit.writer import EVENT_BYTES
    import collections
    tracemalloc.start()
    try:
        q: collections.deque = collections.deque()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20000):
            path = "/p/" + ("x" * 240) + str(i)
            q.append((i, time.time(), 1000 + i, "read", "openat", path, "O_RDONLY", True,
                      "filesystem.read: /", "kernel", None))
        per = (tracemalloc.get_traced_memory()[0] - base) / len(q)
    finally:
        tracemalloc.stop()
    print(f"queued event: {per:.0f} bytes")
    assert per <= EVENT_BYTES, per


def test_a_thread_meter_counts_the_runs_threads_only():
    """The proxy's threads are a run's: metered by their own CPU clocks, never by the
    process's CPU, which other runs' work (here: this thread's spinning) also grows."""
    from sandbox.monitor.cost import ThreadMeter
    meter = ThreadMeter()
    go, seen = threading.Event(), []

    def work():
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.2:
            pass
        seen.append(time.thread_time())
        go.wait(HANG_GUARD)

    t = threading.Thread(target=meter.run, args=(work,))
    p0 = time.process_time()
    t.start()
    _until(lambda: seen, "the metered thread did not run")
    live = meter.total()
    assert live >= seen[0] - 0.01                 # read live, by the thread's own clock
    s0 = time.thread_time()
    while time.thread_time() - s0 < 0.3:          # another run's work, same process
        pass
    go.set()
    t.join()
    total = meter.total()
    assert seen[0] <= total < seen[0] + 0.05
    assert time.process_time() - p0 > total + 0.25   # the process's CPU is not the run's


@pytest.mark.parametrize("files", ["all", "denied"])
def test_finished_runs_leave_nothing_in_the_shared_process(tmp_path, files):
    """A monitor process lives on after its runs: each run's listener, root, store file
    and hub slot go with it."""
    db = str(tmp_path / "audit")
    hub = Hub()
    warm = HubRun(hub, audit_policy(files), "warm", db, _opens("w", 5))
    warm.go()
    assert _wait_exit(warm, []) == 0
    warm.finish()
    import gc
    gc.collect()
    before = sorted(os.listdir("/proc/self/fd"))
    for k in range(4):
        r = HubRun(hub, audit_policy(files), f"run{k}", db, _opens(f"l{k}", 50))
        r.go()
        assert _wait_exit(r, []) == 0
        r.finish()
    gc.collect()
    _until(lambda: hub.runs() == 0, "the hub still holds finished runs")
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_finish_without_release_reports_first_and_leaves_the_listener_to_release(tmp_path):
    """The Supervisor has the summary for the report from `finish(release=False)` and
    closes the run's listener (the last reference to its seccomp filter: freeing it is
    the kernel's work, nothing the caller waits for) in `release()`, after the report."""
    db = str(tmp_path / "audit")
    hub = Hub()
    r = HubRun(hub, audit_policy(), "late", db, _opens("late", 3))
    r.go()
    assert r.wait() == 0
    audit, _ = r.loop.finish(release=False)
    assert audit is not None and audit.records >= 3
    fd = r.loop.listener.fileno()
    os.fstat(fd)                        # still open: the filter is not freed yet
    r.loop.release()
    assert r.loop.listener.fileno() == -1
    r.sock.close()
    assert hub.runs() == 0
