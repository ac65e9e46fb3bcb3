"""Warm pools (sandbox.monitor.pools): each sandbox serves one run of its own key, once;
a pool of a changed policy file never serves; the budget and the pool count hold.

The bookkeeping is pure, so these tests drive it with stand-in sandboxes that
remember what they were made for, and judge every answer against that record
and against the policy file on disk.
"""
from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.monitor.pool_key import PoolKey
from sandbox.monitor.pools import Pools, Settings, Ticket
from sandbox.policy.loader import load_policy_sourced
from sandbox.policy.sources import digest


class Fake:
    """A stand-in prestarted sandbox: what it was made for, and whether it was used."""
    made = 0

    def __init__(self, ticket: Ticket, content: str) -> None:
        Fake.made += 1
        self.id = Fake.made
        self.ticket = ticket
        self.content = content      # the policy file's bytes when it was made
        self.discarded = 0
        self.served = 0

    def discard(self) -> None:
        self.discarded += 1


def K(name: str) -> PoolKey:
    return PoolKey("stub", hashlib.sha256(name.encode()).hexdigest())


def _fill(pools: Pools[Fake], content: str = "") -> list[Fake]:
    out = []
    for t in pools.wanted():
        f = Fake(t, content)
        pools.filled(t, f, 1)
        out.append(f)
    return out


def test_a_burst_is_served_from_the_pool_and_a_miss_starts_cold():
    pools: Pools[Fake] = Pools(Settings(per_pool=2, max_per_pool=4, cost=1, budget=100,
                                        max_starting=8))
    assert pools.take(K("a")) is None            # first run of a policy: cold
    made = _fill(pools)
    assert [f.ticket.key for f in made] == [K("a"), K("a")]
    got = [pools.take(K("a")) for _ in range(3)]
    assert got[0] is made[0] and got[1] is made[1] and got[2] is None   # burst of 3
    assert pools.stats.hits == 2 and pools.stats.misses == 2
    assert len(_fill(pools)) == 3                 # the empty pool grew to 3
    assert pools.ready(K("a")) == 3


def test_a_pool_grows_by_one_per_burst_that_drains_it_not_per_run():
    """A burst of 50 against a pool of 2: one drain, so one more stub; the next burst that
    drains the refilled pool teaches it one more (the reserve follows bursts, one stub at
    a time, never 48 at once)."""
    pools: Pools[Fake] = Pools(Settings(per_pool=2, max_per_pool=8, cost=1, budget=100,
                                        max_starting=100))
    pools.take(K("a"))
    assert len(_fill(pools)) == 2
    for rounds, size in enumerate((3, 4, 5), start=1):
        got = [pools.take(K("a")) for _ in range(50)]        # a burst drains the pool
        assert sum(g is not None for g in got) == size - 1
        made = _fill(pools)
        assert len(made) == size and pools.ready(K("a")) == size, rounds
    assert pools.stats.misses == 1 + 3 * (50 - 2) - (0 + 1 + 2)


def test_a_used_sandbox_never_comes_back():
    pools: Pools[Fake] = Pools(Settings(per_pool=1, cost=1, budget=10))
    pools.take(K("a"))
    (f,) = _fill(pools)
    assert pools.take(K("a")) is f
    assert pools.take(K("a")) is None
    assert all(g is not f for g in _fill(pools))
    assert pools.take(K("a")) is not f


def test_a_sandbox_that_died_while_waiting_is_discarded_not_served():
    pools: Pools[Fake] = Pools(Settings(per_pool=2, cost=1, budget=10, max_starting=8))
    pools.take(K("a"))
    dead, alive = _fill(pools)
    dead.dead = True
    got = pools.take(K("a"), usable=lambda f: not getattr(f, "dead", False))
    assert got is alive and dead.discarded == 1 and pools.ready(K("a")) == 0


def test_a_pool_never_serves_another_key():
    pools: Pools[Fake] = Pools(Settings(per_pool=2, cost=1, budget=10, max_starting=8))
    pools.take(K("a"))
    _fill(pools)
    assert pools.take(K("b")) is None
    assert pools.ready(K("a")) == 2


def _policy(tmp_path, text):
    p = tmp_path / "p.toml"
    p.write_text(text)
    return p


def test_a_changed_policy_file_drops_its_pool_before_a_run(tmp_path):
    """Attack: fill the pool, edit the policy file keeping its size and mtime; the old
    sandboxes must not serve (the run would get a state made for the old file)."""
    p = _policy(tmp_path, "[limits]\nprocesses = 5\n")
    _, sources = load_policy_sourced(str(p), search_path=[])
    pools: Pools[Fake] = Pools(Settings(per_pool=2, cost=1, budget=10, max_starting=8))
    key = K("same shape")       # the worst case: a change the key itself would not see
    pools.take(key, sources)
    old = _fill(pools, p.read_text())
    st_ = os.stat(p)
    p.write_text("[limits]\nprocesses = 6\n")
    os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    assert pools.take(key, sources) is None
    assert all(f.discarded == 1 for f in old)
    assert pools.stats.dropped_changed == 1


def test_sweep_frees_a_changed_pool_without_a_run(tmp_path):
    p = _policy(tmp_path, "[limits]\nprocesses = 5\n")
    _, sources = load_policy_sourced(str(p), search_path=[])
    pools: Pools[Fake] = Pools(Settings(per_pool=2, cost=1, budget=10, max_starting=8))
    pools.take(K("a"), sources)
    old = _fill(pools)
    assert pools.sweep() == []
    p.write_text("[limits]\nprocesses = 9\n")
    assert pools.sweep() == [K("a")]
    assert all(f.discarded == 1 for f in old) and pools.keys() == []


def test_a_touch_keeps_the_pool(tmp_path):
    p = _policy(tmp_path, "[limits]\nprocesses = 5\n")
    _, sources = load_policy_sourced(str(p), search_path=[])
    pools: Pools[Fake] = Pools(Settings(per_pool=1, cost=1, budget=10))
    pools.take(K("a"), sources)
    (f,) = _fill(pools)
    os.utime(p, None)
    assert pools.sweep() == []
    assert pools.take(K("a"), sources) is f


def test_a_sandbox_started_for_a_dropped_pool_is_discarded(tmp_path):
    p = _policy(tmp_path, "[limits]\nprocesses = 5\n")
    _, sources = load_policy_sourced(str(p), search_path=[])
    pools: Pools[Fake] = Pools(Settings(per_pool=1, cost=1, budget=10))
    pools.take(K("a"), sources)
    (ticket,) = pools.wanted()
    p.write_text("[limits]\nprocesses = 6\n")
    pools.sweep()
    pools.take(K("a"), ())               # same key again: a new pool
    late = Fake(ticket, "old")
    assert pools.filled(ticket, late, 1) is False
    assert late.discarded == 1 and pools.ready(K("a")) == 0


def test_idle_pools_and_least_recently_used_pools_go():
    now = [0.0]
    pools: Pools[Fake] = Pools(Settings(max_pools=2, per_pool=1, cost=1, budget=10,
                                        max_idle=60), clock=lambda: now[0])
    pools.take(K("a"))
    pools.take(K("b"))
    fa, fb = _fill(pools)
    pools.take(K("c"))                    # a third pool: the least recently used goes
    assert pools.keys() == [K("b"), K("c")]
    assert fa.discarded == 1 or fb.discarded == 1
    now[0] = 61
    pools.take(K("c"))
    assert pools.sweep() == [K("b")]
    assert fa.discarded + fb.discarded == 2


def test_the_budget_bounds_what_is_ready_and_starting():
    pools: Pools[Fake] = Pools(Settings(per_pool=4, max_per_pool=4, cost=3, budget=10,
                                        max_starting=8))
    pools.take(K("a"))
    assert len(pools.wanted()) == 3       # 3 x 3 <= 10 < 4 x 3


def test_a_key_that_cannot_start_is_not_retried_in_a_loop():
    pools: Pools[Fake] = Pools(Settings(per_pool=2, cost=1, budget=10, max_starting=8))
    pools.take(K("a"))
    for t in pools.wanted():
        pools.failed(t)
    assert pools.wanted() == []
    pools.take(K("a"))                    # a run found it empty: one more try
    assert len(pools.wanted()) == 1


def test_settings_are_checked():
    with pytest.raises(ValueError, match="per_pool"):
        Settings(per_pool=9, max_per_pool=2)
    with pytest.raises(ValueError, match="budget"):
        Settings(budget=-1)


# -- the invariants, over any sequence of runs, refills, edits and upkeep --------------
OPS = st.lists(st.one_of(
    st.tuples(st.just("take"), st.integers(0, 3)),
    st.tuples(st.just("fill"), st.integers(0, 4), st.integers(1, 5)),
    st.tuples(st.just("fail"), st.integers(0, 2)),
    st.tuples(st.just("edit"), st.integers(0, 3)),
    st.tuples(st.just("sweep"), st.just(0)),
    st.tuples(st.just("tick"), st.integers(0, 200)),
), max_size=60)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(OPS, st.integers(1, 4), st.integers(4, 30))
def test_pool_invariants(tmp_path_factory, ops, max_pools, budget):
    d = tmp_path_factory.mktemp("pol")
    files = [d / f"p{i}.toml" for i in range(4)]
    version = [0] * 4
    for f in files:
        f.write_text("[limits]\nprocesses = 1000\n")
    now = [0.0]
    pools: Pools[Fake] = Pools(Settings(max_pools=max_pools, per_pool=1, max_per_pool=3,
                                        cost=2, budget=budget, max_starting=3, max_idle=100),
                               clock=lambda: now[0])
    everything: list[Fake] = []
    pending: list[Ticket] = []
    key_of_file = {}

    def sources(i):
        _, src = load_policy_sourced(str(files[i]), search_path=[])
        key_of_file[i] = K(f"shape{i % 2}:" + digest(src))   # two files share a shape
        return src

    for op, a, *rest in ops:
        if op == "take":
            src = sources(a)
            got = pools.take(key_of_file[a], src)
            if got is not None:
                assert got.ticket.key == key_of_file[a]           # its own key
                assert got.content == files[a].read_text()        # made for what is on disk
                assert got.served == 0 and got.discarded == 0     # used once, never discarded
                got.served += 1
        elif op == "fill":
            pending += pools.wanted()
            for t in pending[:a]:
                i = next(i for i, k in key_of_file.items() if k == t.key)
                f = Fake(t, files[i].read_text())
                everything.append(f)
                pools.filled(t, f, rest[0])
            del pending[:a]
        elif op == "fail":
            for t in pending[:a]:
                pools.failed(t)
            del pending[:a]
        elif op == "edit":
            version[a] += 1
            files[a].write_text(f"[limits]\nprocesses = {1000 + version[a]}\n")
        elif op == "sweep":
            pools.sweep()
        else:
            now[0] += a
        assert len(pools.keys()) <= max_pools
        assert pools.ready_bytes() <= budget
        assert all(pools.ready(k) <= 3 for k in pools.keys())
        assert all(f.discarded <= 1 for f in everything)
        assert all(not (f.served and f.discarded) for f in everything)
    pools.close()
    # every sandbox made was either served once or discarded once: none leaks, none twice
    assert all(f.served + f.discarded == 1 for f in everything)
