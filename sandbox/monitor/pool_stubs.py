"""The monitor host's warm pools of stubs: per effective policy, limits written.

`sandbox.monitor.pools` is the bookkeeping (what to take, start, drop); this
module is what it manages in the host: stubs forked by the zygote (`stubs.make`)
that joined cgroups made *with the run's limits* (the ``limits`` level of
`sandbox.monitor.pool_key`), entered the namespaces the policy needs (its own
network namespace, or the host's for ``network.mode = "host"``), said
`StubReady`, and wait for a run. A run whose key has one takes it (a pool hit:
the monitor writes nothing, the stub gets the spec at once); any other run
falls back to the host's spare or a stub made for it (a miss), and makes its
key recently used so the next runs find stubs ready.

Everything here runs on the host's event loop; a stub's readiness is one of its
sources. What blocks (removing a cgroup waits for its last process) goes to the
host's end workers through `defer`, except when the host ends (`close`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from sandbox.monitor import pool_key, stubs
from sandbox.monitor.pool_key import PoolKey
from sandbox.monitor.pools import Pools, Settings, Ticket
from sandbox.policy.model import Limits, Policy
from sandbox.policy.plan import FsPlan
from sandbox.protocol import Spec

if TYPE_CHECKING:
    from sandbox.monitor.cgroups import RunCgroup

LEVEL = "limits"
# A pooled stub's private bytes are read (smaps_rollup: a walk of its mappings in the
# kernel, ~0.3 ms of the host's loop per stub) for the first stub of a key and every this
# many after; the stubs between are counted at their key's last measure (the stubs of one
# key are forks of one zygote, made alike) or, without one, as Pools counts a sandbox of
# unknown cost (the largest seen).
MEASURE_EVERY = 16


@dataclass(frozen=True)
class Recipe:
    """How to make a stub of one key: what its shape names, nothing per run."""
    network: bool           # its own network namespace
    memory: int | None
    processes: int | None


def recipe_of(policy: Policy) -> Recipe:
    return Recipe(network=policy.network.mode != "host", memory=policy.limits.memory,
                  processes=policy.limits.processes)


class Pooled:
    """A ready stub in a pool: discarding it ends the stub and frees its cgroups."""

    def __init__(self, pre: stubs.Prestarted, remove_cgroup: Callable[["RunCgroup"], None]
                 ) -> None:
        self.pre, self._remove = pre, remove_cgroup

    def discard(self) -> None:
        self.pre.discard()
        if self.pre.cgroup is not None:
            self._remove(self.pre.cgroup)
            self.pre.cgroup = None


def _waiting(item: Pooled) -> bool:
    return item.pre.waiting()


def private_bytes(pid: int) -> int | None:
    """What one more waiting sandbox adds to the machine: the private pages (USS) of
    its PID 1, the Python fork that waits for the spec (the stub is then the compiled
    waiter, whose few pages are not counted). Its PSS also counts a share of the
    zygote's pages, which exist anyway."""
    total, seen = 0, False
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
                    seen = True
    except (OSError, ValueError):
        return None
    return total if seen else None


class StubPools:
    def __init__(self, zygote: stubs.Forker,
                 watch: Callable[[socket.socket, Callable[[], None]], None],
                 unwatch: Callable[[socket.socket], None],
                 defer: Callable[[Callable[[], object]], None],
                 settings: Settings | None = None) -> None:
        self.zygote, self._watch, self._unwatch, self._defer = zygote, watch, unwatch, defer
        self._closing = False
        self.pools: Pools[Pooled] = Pools(settings)
        self.recipes: dict[PoolKey, Recipe] = {}
        self._starting: dict[int, stubs.Prestarted] = {}   # by status socket fd
        self._n = 0
        # per key: stubs ready so far, and the last measured cost (MEASURE_EVERY)
        self._fills: dict[PoolKey, tuple[int, int | None]] = {}

    def _remove(self, cg: "RunCgroup") -> None:
        """Free a discarded stub's cgroups: off the loop, or now when the host ends."""
        if self._closing:
            cg.remove()
        else:
            self._defer(cg.remove)

    def take(self, spec: Spec, policy: Policy | None = None,
             plan: FsPlan | None = None) -> stubs.Prestarted | None:
        """A ready stub of the run's key (its cgroups carry the run's limits), or None.
        `policy`, `plan`: the spec's, parsed once by the host (runspec.build_context)."""
        policy = Policy.from_dict(spec.policy) if policy is None else policy
        keyed = pool_key.for_spec(spec, LEVEL, policy, plan)
        if keyed is None:
            return None
        key, sources = keyed
        # this run's own recipe, always (never one recorded for an earlier pool of the key)
        self.recipes[key] = recipe_of(policy)
        got = self.pools.take(key, sources, usable=_waiting)
        return got.pre if got is not None else None   # refills: `refill`, after the turn

    def refill(self) -> None:
        """Start what the pools want. The host calls it after each turn of its loop, off
        any run's path: each start is one zygote round trip; the stub's set-up runs in
        the stub, and its readiness comes back as an event."""
        live = set(self.pools.keys())
        for k in [k for k in self.recipes if k not in live]:
            del self.recipes[k]
        for k in [k for k in self._fills if k not in live]:
            del self._fills[k]
        for ticket in self.pools.wanted():
            recipe = self.recipes.get(ticket.key)
            if recipe is None:
                self.pools.failed(ticket)
                continue
            self._start(ticket, recipe)

    def _start(self, ticket: Ticket, recipe: Recipe) -> None:
        from sandbox.monitor import cgroups
        self._n += 1
        cg = None
        try:
            cg = cgroups.create(f"pool{os.getpid()}-{self._n}",
                                Limits(memory=recipe.memory, processes=recipe.processes),
                                support=cgroups.probe_cached(), pids_overhead=1)  # + the stub
        except (OSError, ValueError):
            cg = None
        # None: no cgroup can be made here; a cold start makes none either (rlimits hold)
        try:
            pre = stubs.make(self.zygote, cg, namespaces=True, network=recipe.network)
        except OSError:
            if cg is not None:
                self._remove(cg)
            self.pools.failed(ticket)
            return
        pre.limits_written = True
        self._starting[pre.status.fileno()] = pre
        self._watch(pre.status, lambda: self._ready(ticket, pre))

    def _ready(self, ticket: Ticket, pre: stubs.Prestarted) -> None:
        self._unwatch(pre.status)
        self._starting.pop(pre.status.fileno(), None)
        ready = pre.take_ready()
        if ready is None or not ready.ok:
            Pooled(pre, self._remove).discard()
            self.pools.failed(ticket)
            return
        n, cost = self._fills.get(ticket.key, (0, None))
        if n % MEASURE_EVERY == 0 or cost is None:
            cost = private_bytes(pre.pid1 or pre.stub_pid)
        self._fills[ticket.key] = (n + 1, cost)
        self.pools.filled(ticket, Pooled(pre, self._remove), cost)

    def sweep(self) -> None:
        self.pools.sweep()

    def zygote_died(self) -> None:
        """Every stub here died with the zygote that forked them: discard them all; the
        pools and their targets stay, and `refill` starts them on the new zygote."""
        for pre in list(self._starting.values()):
            self._unwatch(pre.status)
            Pooled(pre, self._remove).discard()
        self._starting.clear()
        self.pools.empty()

    def close(self) -> None:
        self._closing = True
        for pre in list(self._starting.values()):
            self._unwatch(pre.status)
            Pooled(pre, self._remove).discard()
        self._starting.clear()
        self.pools.close()
