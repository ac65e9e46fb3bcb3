"""A pooled stub's cost (its private bytes, read from smaps_rollup) is measured for the
first stub of a key and every MEASURE_EVERY after; the stubs between count at their
key's last measure, so the memory budget still sees every stub (pool_stubs.py)."""
from __future__ import annotations

from sandbox.monitor import pool_stubs
from sandbox.monitor.pool_key import PoolKey
from sandbox.monitor.pools import Settings
from sandbox.protocol import StubReady


class _Sock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class _Stub:
    def __init__(self, n: int) -> None:
        self.status, self.stub_pid, self.cgroup, self.discarded = _Sock(1000 + n), 1000 + n, \
            None, False
        self.pid1 = 2000 + n

    def take_ready(self) -> StubReady:
        return StubReady(ok=True)

    def discard(self) -> None:
        self.discarded = True


def test_the_cost_is_read_once_per_key_every_measure_every(monkeypatch):
    reads: list[int] = []
    sizes = iter(range(1, 1000))

    def fake_private_bytes(pid: int) -> int:
        reads.append(pid)
        return next(sizes) * 4096
    monkeypatch.setattr(pool_stubs, "private_bytes", fake_private_bytes)
    total = 2 * pool_stubs.MEASURE_EVERY + 3
    sp = pool_stubs.StubPools(None, lambda *a: None, lambda *a: None, lambda f: None,
                              Settings(budget=1 << 40, per_pool=8, max_per_pool=8 * total))
    keys = [PoolKey("limits", "a" * 64), PoolKey("limits", "b" * 64)]
    costs: dict[PoolKey, list[int]] = {k: [] for k in keys}
    original = sp.pools.filled

    def filled(ticket, item, cost=None):
        costs[ticket.key].append(cost)
        return original(ticket, item, cost)
    sp.pools.filled = filled   # type: ignore[method-assign]
    for key in keys:
        assert sp.pools.take(key) is None          # a miss makes the pool
        sp.pools._pools[key].target = total
    n = 0
    while any(len(c) < total for c in costs.values()):
        for ticket in sp.pools.wanted():
            n += 1
            stub = _Stub(n)
            sp._starting[stub.status.fileno()] = stub   # as `_start` records it
            sp._ready(ticket, stub, pool_stubs.Recipe(True, None, None), None)
    for key in keys:
        got = costs[key][:total]
        assert all(c is not None for c in got)      # never counted blind
        measured = [i for i in range(total) if i % pool_stubs.MEASURE_EVERY == 0]
        # a new figure exactly at each measure, the key's last one in between
        assert [i for i in range(1, total) if got[i] != got[i - 1]] == measured[1:]
    assert len(reads) == 2 * len(measured)
    assert sp.pools.used_bytes() == sum(sum(c) for c in costs.values())
