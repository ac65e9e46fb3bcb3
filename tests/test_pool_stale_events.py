"""A stub discarded while an event of it is still in the host loop's batch.

The loop collects a batch of ready sources, then calls each one's callback. When
the zygote dies, its callback discards every stub still starting (their status
or setup socket may be in the same batch, readable at their end); the callback
of such a stub then runs on a stub already discarded. It must do nothing: a
second discard signalled pidfd -1 (EBADF), which raised in the host's loop and
ended the host, and with it every run's report ("the monitor process ended
unexpectedly"), as one CI run saw.
"""
from __future__ import annotations

import os
import socket
import subprocess

from sandbox.monitor import pool_stubs, stubs
from sandbox.monitor.pool_key import PoolKey
from sandbox.monitor.pools import Settings


def _prestarted() -> tuple[stubs.Prestarted, subprocess.Popen]:
    child = subprocess.Popen(["sleep", "60"])
    socks = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(3)]
    for _, theirs in socks:
        theirs.close()
    status, setup, go = (ours for ours, _ in socks)
    return stubs.Prestarted(child.pid, os.pidfd_open(child.pid), status, setup, go, None), child


def test_a_stub_discarded_twice_is_ended_once_and_raises_nothing():
    pre, child = _prestarted()
    pre.discard()
    assert child.wait(10) == -9 and pre.stub_fd == -1
    pre.discard()   # raised OSError (EBADF) on the pidfd -1


def test_a_starting_stubs_late_events_after_the_zygote_died_do_nothing():
    failed: list[object] = []
    sp = pool_stubs.StubPools(None, lambda *a: None, lambda *a: None, lambda f: None,
                              Settings(), scratch="/nonexistent")
    sp.pools.failed = failed.append   # type: ignore[method-assign]
    key = PoolKey("view", "a" * 64)
    assert sp.pools.take(key) is None                 # a miss makes the pool
    tickets = sp.pools.wanted()
    starting, child1 = _prestarted()
    viewing, child2 = _prestarted()
    st_fd, se_fd = starting.status.fileno(), viewing.setup.fileno()
    sp._starting[st_fd] = starting
    sp._viewing[se_fd] = viewing
    sp.zygote_died()                                  # discards both
    assert child1.wait(10) == -9 and child2.wait(10) == -9
    state = pool_stubs.host_state()
    # their events, collected in the same batch as the zygote's
    sp._ready(tickets[0], starting, pool_stubs.Recipe(True, None, None), None)
    sp._view_ready(tickets[0], viewing, pool_stubs.ViewState((), state))
    assert failed == [] and not sp._starting and not sp._viewing
