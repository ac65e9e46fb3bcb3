"""Warm pools: prestarted sandboxes kept ready per effective policy, each used once.

The monitor host keeps, for each recently used pool key (sandbox.monitor.
pool_key: the run's resolved plan at the level the pool prepares, and the
contents of the policy files it came from), a few sandboxes already through
the slow first steps. A run whose key has a ready sandbox takes it (a hit);
any other run starts cold (a miss) and makes its key recently used, so the
next runs of that policy find sandboxes ready. This module is the
bookkeeping only, pure and single-threaded (the host's event loop calls it;
the zygote does the forking): what to take, what to start, what to drop.

The rules it keeps, each tested (tests/test_pools.py):

- a sandbox serves one run, of its own key, once: `take` pops it and checks
  the key it was made for; nothing puts a used one back;
- a pool whose policy files changed is dropped before it can serve: `take`
  checks the files (one stat each, the hash when the stat moved:
  sandbox.policy.sources) and `sweep` checks every pool, so a changed file
  frees its sandboxes without waiting for a run;
- at most `max_pools` pools (least recently used dropped first), each holds
  at most `max_per_pool` sandboxes; what is ready plus what is being made
  stays within `budget` bytes (each sandbox counted at the largest cost seen);
- a pool unused for `max_idle` seconds is dropped;
- everything dropped is discarded exactly once (the owner's `discard`), and a
  sandbox that finishes starting for a pool that is gone is discarded, not
  kept.

The target size of a pool starts at `per_pool` and grows by one (up to
`max_per_pool`) each time a run finds it *emptied*: once per burst that drains
it, not once per run of that burst. Every run of a burst that finds the pool
dry is one more sandbox the pool could have held, but they are one signal (the
pool was too small for a burst), and counting each of them made one burst of
50 grow the pool to its largest size at once: 8 waiting stubs, each a Python
fork with ~2 MiB of copied pages, kept for every later minute of the policy
(issue 14: they were a third of the memory of 50 live sandboxes). So a pool
grows by one, then not again until it has been refilled to its target (or a
start failed): bursts that keep draining it keep teaching it, one stub each.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Generic, Protocol, TypeVar

from sandbox.monitor.pool_key import PoolKey
from sandbox.policy.sources import Sources, refresh

MiB = 1 << 20


class Discardable(Protocol):
    def discard(self) -> None: ...


T = TypeVar("T", bound=Discardable)


@dataclass(frozen=True)
class Settings:
    max_pools: int = 8           # pools kept (least recently used dropped first)
    per_pool: int = 2            # a new pool's target size
    max_per_pool: int = 8        # a pool's largest target (grown by bursts)
    budget: int = 64 * MiB       # bytes of ready and starting sandboxes together
    cost: int = 2 * MiB          # first estimate of one sandbox's cost (PSS)
    max_starting: int = 2        # sandboxes being started at once (2 cores here)
    max_idle: float = 300.0      # seconds a pool is kept without a run

    def __post_init__(self) -> None:
        for name in ("max_pools", "per_pool", "max_per_pool", "budget", "cost", "max_starting"):
            if getattr(self, name) < 0:
                raise ValueError(f"pool settings: {name} must not be negative")
        if self.per_pool > self.max_per_pool:
            raise ValueError("pool settings: per_pool exceeds max_per_pool")


@dataclass(frozen=True)
class Ticket:
    """One sandbox to start for `key` (from `wanted`), for the pool instance `gen`:
    a sandbox that comes up after its pool was dropped is discarded, even if a pool
    of the same key exists again by then."""
    key: PoolKey
    gen: int


@dataclass
class _Entry(Generic[T]):
    key: PoolKey        # what it was started for
    item: T
    cost: int


@dataclass
class _Pool(Generic[T]):
    key: PoolKey
    gen: int
    sources: Sources
    target: int
    used: float                                     # last take (clock)
    ready: deque[_Entry[T]] = field(default_factory=deque)
    starting: int = 0
    hits: int = 0
    misses: int = 0
    grown: bool = False     # grew for the drain under way: not again until refilled


@dataclass
class Stats:
    hits: int = 0
    misses: int = 0
    started: int = 0
    discarded: int = 0
    dropped_changed: int = 0    # pools dropped because a policy file changed
    dropped_lru: int = 0
    dropped_idle: int = 0


class Pools(Generic[T]):
    def __init__(self, settings: Settings | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or Settings()
        self.clock = clock
        self._pools: OrderedDict[PoolKey, _Pool[T]] = OrderedDict()   # least recent first
        self._cost = self.settings.cost       # per sandbox: the largest seen
        self._gen = 0
        self.stats = Stats()

    # -- a run -------------------------------------------------------------------
    def take(self, key: PoolKey, sources: Sources = (),
             usable: Callable[[T], bool] | None = None) -> T | None:
        """A sandbox ready for `key`, now no longer in the pool; None: start cold.
        `sources`: the files the run's policy was read from (for a new pool).
        `usable`: a last check of a sandbox (is its stub still alive); one that fails it
        is discarded and the next is tried."""
        pool = self._pools.get(key)
        if pool is not None and pool.sources and not self._still(pool):
            self._drop(pool, "changed")
            pool = None
        if pool is None:
            self.stats.misses += 1
            self._gen += 1
            self._pools[key] = pool = _Pool(key, self._gen, tuple(sources),
                                            self.settings.per_pool, self.clock(), misses=1)
            self._evict()
            return None
        self._pools.move_to_end(key)
        pool.used = self.clock()
        while pool.ready:
            entry = pool.ready.popleft()
            if entry.key != key or (usable is not None and not usable(entry.item)):
                self._discard(entry)  # another key's: never happens; fail closed anyway
                continue
            pool.hits += 1
            self.stats.hits += 1
            return entry.item
        pool.misses += 1
        self.stats.misses += 1
        if not pool.grown:      # once per drain (module doc)
            pool.grown = True
            pool.target = min(pool.target + 1, self.settings.max_per_pool)
        return None

    # -- refill ------------------------------------------------------------------
    def wanted(self) -> list[Ticket]:
        """Sandboxes to start now, most recently used pool first, one key per sandbox;
        each is counted as starting (its cost reserved) until `filled` or `failed`."""
        out: list[Ticket] = []
        starting = sum(p.starting for p in self._pools.values())
        for pool in reversed(self._pools.values()):
            while (starting < self.settings.max_starting
                   and len(pool.ready) + pool.starting < pool.target
                   and self._used() + self._cost <= self.settings.budget):
                pool.starting += 1
                starting += 1
                out.append(Ticket(pool.key, pool.gen))
        return out

    def filled(self, ticket: Ticket, item: T, cost: int | None = None) -> bool:
        """The sandbox of `ticket` is ready. False (and it is discarded) when its pool
        is gone, its policy files changed, or it does not fit the budget."""
        pool = self._pools.get(ticket.key)
        entry = _Entry(ticket.key, item, self._cost if cost is None else cost)
        self.stats.started += 1
        if pool is None or pool.gen != ticket.gen:
            self._discard(entry)
            return False
        pool.starting = max(0, pool.starting - 1)
        self._cost = max(self._cost, entry.cost)
        if pool.sources and not self._still(pool):
            self._discard(entry)
            self._drop(pool, "changed")
            return False
        if self._used() + entry.cost > self.settings.budget or \
                len(pool.ready) >= self.settings.max_per_pool:
            self._discard(entry)
            return False
        pool.ready.append(entry)
        if len(pool.ready) >= pool.target:
            pool.grown = False   # refilled: the next drain may grow it again
        return True

    def failed(self, ticket: Ticket) -> None:
        """The sandbox of `ticket` did not come up. Its pool's target shrinks by one (a
        run that finds the pool empty grows it again), so a key whose sandboxes cannot
        start costs at most one attempt per run, not a busy loop."""
        pool = self._pools.get(ticket.key)
        if pool is not None and pool.gen == ticket.gen:
            pool.starting = max(0, pool.starting - 1)
            pool.target = max(0, pool.target - 1)
            pool.grown = False   # the next run that finds it empty tries one more

    # -- upkeep ------------------------------------------------------------------
    def sweep(self) -> list[PoolKey]:
        """Drop the pools whose policy files changed or that were idle too long;
        returns their keys. Cheap: one stat per policy file."""
        now = self.clock()
        gone = []
        for pool in list(self._pools.values()):
            if pool.sources and not self._still(pool):
                self._drop(pool, "changed")
            elif now - pool.used > self.settings.max_idle:
                self._drop(pool, "idle")
            else:
                continue
            gone.append(pool.key)
        return gone

    def empty(self) -> None:
        """The sandboxes are gone (their zygote died): discard the ready ones, forget the
        starting ones (their tickets no longer count: `filled` discards, `failed` is a
        no-op); keep every pool and its target, so `wanted` starts them again."""
        for pool in self._pools.values():
            while pool.ready:
                self._discard(pool.ready.popleft())
            self._gen += 1
            pool.gen, pool.starting = self._gen, 0

    def close(self) -> None:
        """Discard every ready sandbox (the host is ending)."""
        for pool in list(self._pools.values()):
            self._drop(pool, None)

    # -- views -------------------------------------------------------------------
    def ready(self, key: PoolKey) -> int:
        pool = self._pools.get(key)
        return len(pool.ready) if pool is not None else 0

    def dry(self) -> bool:
        """A pool has nothing ready and nothing starting below its target: the next run
        of its policy would start cold, so its refill should not wait."""
        return any(not p.ready and not p.starting and p.target > 0
                   for p in self._pools.values())

    def keys(self) -> list[PoolKey]:
        """Pools, least recently used first."""
        return list(self._pools)

    def used_bytes(self) -> int:
        """Ready sandboxes at their measured cost, starting ones at the estimate."""
        return self._used()

    def ready_bytes(self) -> int:
        return sum(e.cost for p in self._pools.values() for e in p.ready)

    # -- inside ------------------------------------------------------------------
    def _used(self) -> int:
        return sum(e.cost for p in self._pools.values() for e in p.ready) + \
            sum(p.starting for p in self._pools.values()) * self._cost

    def _still(self, pool: _Pool[T]) -> bool:
        fresh = refresh(pool.sources)
        if fresh is None:
            return False
        pool.sources = fresh        # the next check is one stat per file again
        return True

    def _evict(self) -> None:
        while len(self._pools) > self.settings.max_pools:
            self._drop(next(iter(self._pools.values())), "lru")

    def _drop(self, pool: _Pool[T], why: str | None) -> None:
        if self._pools.get(pool.key) is pool:
            del self._pools[pool.key]
        while pool.ready:
            self._discard(pool.ready.popleft())
        if why == "changed":
            self.stats.dropped_changed += 1
        elif why == "lru":
            self.stats.dropped_lru += 1
        elif why == "idle":
            self.stats.dropped_idle += 1

    def _discard(self, entry: _Entry[T]) -> None:
        self.stats.discarded += 1
        entry.item.discard()
