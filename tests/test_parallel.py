"""run_parallel: one sandbox per item, concurrency limit, fail-fast and cancellation."""
from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from conftest import processes_with
from sandbox.launcher.launcher import Launcher
from sandbox.parallel import run_parallel

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")
WF = {"name": "items", "imports": ["mw_actions"], "stages": [{"id": "s", "actions": ["mw.item"]}]}


def marker() -> str:
    # a sleep length unique to this test: its command line identifies our children
    return f"3{uuid.uuid4().int % 10**6:06d}"


def wait_for(cond, tries=400):
    """Bounded wait (tries x 50 ms) for a condition about processes."""
    for _ in range(tries):
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_each_item_gets_its_own_sandbox_in_order_within_the_concurrency_limit():
    launcher = Launcher(capture_output=True)
    lock, live, peak = threading.Lock(), [0], [0]

    def before(req):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])

    def after(res, info):
        with lock:
            live[0] -= 1
    launcher.before_spawn(before)
    launcher.after_spawn(after)
    items = [1, 2.5, "three", None, {"k": [True]}, 6]
    results = run_parallel(launcher, WF, items, concurrency=2, code_paths=[CODE])
    assert [r.status for r in results] == ["ok"] * 6, [r.reason for r in results]
    assert [r.store["seen"] for r in results] == [{"item": it, "index": i}
                                                  for i, it in enumerate(items)]
    assert type(results[1].store["seen"]["item"]) is float
    assert len({r.run_id for r in results}) == 6
    assert len({r.pids["sandboxee"] for r in results}) == 6
    assert 1 <= peak[0] <= 2


def test_first_failure_cancels_the_rest_and_kills_running_children():
    launcher = Launcher(capture_output=True)
    m = marker()
    started = threading.Event()
    items = [f"sleep:{m}", f"sleep:{m}", "fail", f"sleep:{m}", f"sleep:{m}"]

    # item 2 runs only once items 0 and 1 are visibly sleeping (concurrency 2 keeps it queued)
    def before(req):
        if req.info.index == 2:
            assert wait_for(lambda: len(processes_with(m)) >= 2)
            started.set()
    launcher.before_spawn(before)
    results = run_parallel(launcher, WF, items, concurrency=3, code_paths=[CODE], grace=2.0)
    assert started.is_set()
    statuses = [(r.status, r.reason) for r in results]
    assert statuses[2][0] == "error" and "ValueError" in statuses[2][1]
    assert statuses[0] == statuses[1] == ("cancelled", "cancelled by the caller")  # killed running
    assert results[0].pids and results[0].run_id                     # they did start
    assert statuses[3] == statuses[4] == ("cancelled", "cancelled before it started")
    assert results[3].run_id == "" and results[4].pids == {}
    assert wait_for(lambda: processes_with(m) == [])


def test_an_external_cancel_stops_a_batch_and_leaves_no_process():
    launcher = Launcher(capture_output=True)
    m = marker()
    cancel = threading.Event()
    out: list = []
    t = threading.Thread(target=lambda: out.extend(run_parallel(
        launcher, WF, [f"sleep:{m}"] * 4, concurrency=2, cancel=cancel, code_paths=[CODE])))
    t.start()
    assert wait_for(lambda: len(processes_with(m)) >= 2)
    cancel.set()
    t.join(60)
    assert not t.is_alive()
    assert [r.status for r in out] == ["cancelled"] * 4
    assert sum(1 for r in out if r.pids) == 2                   # two ran, two never started
    assert wait_for(lambda: processes_with(m) == [])


def test_without_fail_fast_every_item_runs():
    launcher = Launcher(capture_output=True)
    results = run_parallel(launcher, WF, ["fail", 1, "fail", 2], concurrency=2,
                           fail_fast=False, code_paths=[CODE])
    assert [r.status for r in results] == ["error", "ok", "error", "ok"]


def test_a_bailed_item_is_not_a_failure():
    launcher = Launcher(capture_output=True)
    bail = {"name": "b", "imports": ["mw_actions"],
            "stages": [{"id": "s", "actions": ["mw.bail", "mw.item"]}]}
    results = run_parallel(launcher, bail, [1, 2, 3], concurrency=2, code_paths=[CODE])
    assert all(r.status == "ok" and r.bailed for r in results)


def test_a_monitor_that_ignores_cancel_is_killed_after_the_grace():
    import socket

    from sandbox.launcher.session import Budget, Session

    class DeafMonitor:          # never acts on "cancel", never reports
        stdout = stderr = None
        killed = 0

        def kill(self):
            self.killed += 1

    ipc, ipc_peer = socket.socketpair()
    ctl, ctl_peer = socket.socketpair()
    token = threading.Event()
    proc = DeafMonitor()
    s = Session(run_id="r", proc=proc, ipc=ipc, ctl=ctl, store={}, budget=Budget(),
                handler_sets=[], wall=None, cancel=token, grace=0.0)
    assert s._check_cancel() is False and proc.killed == 0      # not cancelled yet
    token.set()
    assert s._check_cancel() is False                            # cancel sent, grace starts
    assert ctl_peer.recv(4096).find(b'"cancel"') > 0
    assert s._check_cancel() is True and proc.killed == 1        # grace (0 s) is over
    assert s.state.monitor_report.cancelled is True
    for sock in (ipc, ipc_peer, ctl, ctl_peer):
        sock.close()
