"""When the monitor host refills its warm pools: never while a run's end is being made.

A refill forks stubs through the zygote, joins cgroups and enters namespaces: work in
the host's loop that shares the 2 cores and the interpreter with the end worker making
a run's report (output copied out, audit store finished, cost read). A refill begun at
the run's last exit made that run's report wait (alternated, 60 settled strict
`/bin/true` runs: exited -> finished 3.6 vs 1.9 ms). These tests pin the rule
(`Host._refill_at`) and the end worker's half of it (`host._end`: the run is marked
reported, and the loop woken, once its report is sent and before its slower cleanup).
"""
from __future__ import annotations

import socket
from types import SimpleNamespace

from sandbox.ipc.channel import Channel
from sandbox.monitor import host
from sandbox.protocol import ExitReport


class _Pools:
    def __init__(self, dry: bool) -> None:
        self._dry = dry

    def dry(self) -> bool:
        return self._dry


def _host(runs: list[host.Run], dry: bool = False) -> SimpleNamespace:
    return SimpleNamespace(pools=SimpleNamespace(pools=_Pools(dry)), runs=runs)


def _run(*, ending: bool = False, reported: bool = False, ready_ms: float | None = 5.0,
         t0: float = 100.0) -> host.Run:
    timings = {} if ready_ms is None else {"sandboxee_ready": ready_ms / 1000}
    sup = SimpleNamespace(t0=t0, timings=timings, done=ending)
    run = host.Run(fds=host.RunFds(ipc=-1, ctl=-1, stdio=[]), ctl=None,  # type: ignore[arg-type]
                   sup=sup)  # type: ignore[arg-type]
    run.ending, run.reported = ending, reported
    return run


def _refill_at(h: SimpleNamespace, now: float) -> float | None:
    return host.Host._refill_at(h, now)  # type: ignore[arg-type]


def test_no_refill_while_a_run_is_ending_and_not_yet_reported():
    now = 200.0
    assert _refill_at(_host([_run(ending=True)]), now) is None
    # beside another run long into its program, still none
    assert _refill_at(_host([_run(ending=True), _run(t0=0.0)]), now) is None


def test_a_dry_pool_still_refills_beside_an_ending_run():
    """A dry pool's next run would start cold (bursts, concurrent runs): as before,
    it refills as soon as no run sets up, whatever the others are doing."""
    now = 200.0
    assert _refill_at(_host([_run(ending=True)], dry=True), now) == now
    assert _refill_at(_host([_run(ending=True), _run(ready_ms=None)], dry=True), now) is None


def test_a_reported_run_no_longer_holds_the_refill():
    now = 200.0
    assert _refill_at(_host([_run(ending=True, reported=True)]), now) == now
    assert _refill_at(_host([]), now) == now


def test_the_other_rules_are_unchanged():
    now = 200.0
    # a run setting up (no Ready yet) holds it, dry or not
    assert _refill_at(_host([_run(ready_ms=None)], dry=True), now) is None
    # a run in its program's first moments defers it to REFILL_AFTER past Ready...
    run = _run(t0=now, ready_ms=5.0)
    assert _refill_at(_host([run]), now) == now + 0.005 + host.REFILL_AFTER
    # ...unless a pool is dry
    assert _refill_at(_host([run], dry=True), now) == now


def test_the_end_worker_wakes_the_loop_once_the_report_is_out_and_before_cleanup():
    order: list[str] = []
    mine, theirs = socket.socketpair()
    sup = SimpleNamespace(end=lambda: ExitReport(status=0),
                          cleanup=lambda: order.append("cleanup"))
    run = host.Run(fds=host.RunFds(ipc=-1, ctl=-1, stdio=[]), ctl=Channel(mine.detach()),
                   sup=sup)  # type: ignore[arg-type]
    run.ending = True

    def wake() -> None:
        order.append("wake")
        assert run.reported
        theirs.settimeout(5)
        got = b""
        while chunk := theirs.recv(1 << 16):   # up to EOF: the channel closed first too
            got += chunk
        assert got   # the report was sent before the wake-up

    host._end(run, wake)
    assert order == ["wake", "cleanup"]
    theirs.close()
