"""The monitor host's warm pools of stubs: per effective policy, limits written or view built.

`sandbox.monitor.pools` is the bookkeeping (what to take, start, drop); this
module is what it manages in the host: stubs forked by the zygote (`stubs.make`)
that joined cgroups made *with the run's limits* (the ``limits`` level of
`sandbox.monitor.pool_key`), entered the namespaces the policy needs (its own
network namespace, or the host's for ``network.mode = "host"``), said
`StubReady`, and wait for a run. A run whose key has one takes it (a pool hit:
the monitor writes nothing, the stub gets the spec at once); any other run
falls back to the host's spare or a stub made for it (a miss), and makes its
key recently used so the next runs find stubs ready.

A run without a terminal (an exec'd program or a Python action) is pooled one level
deeper, ``view``, when its plan splits (sandbox/isolation/prebuilt.py): the pooled PID 1 is also
sent the policy's part of the run's mount table before any run and builds it
(`ViewReady`), so the run's mount layer is left with its own directories. Such a
sandbox is served only while the host is as it was: the run's own table has the
same early steps (a file denied or bound since, or gone since, changes them), the
bound sources and masked objects have the same (device, inode), the host's mount
table and the /etc files the view's copies came from are the same
(`ViewState.fresh`); else it is discarded and the run starts cold.

Everything here runs on the host's event loop; a stub's readiness is one of its
sources. What blocks (removing a cgroup waits for its last process) goes to the
host's end workers through `defer`, except when the host ends (`close`).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.isolation import mount_plan, prebuilt, sysview
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.isolation.mount_steps import Prepared, Step
from sandbox.monitor import pool_key, runspec, stubs
from sandbox.monitor.pool_key import PoolKey
from sandbox.monitor.pools import Pools, Settings, Ticket
from sandbox.policy.model import Limits, Policy
from sandbox.policy.plan import FsPlan
from sandbox.protocol import Spec, ViewReady

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
class ViewRecipe:
    """What a PID 1 pooled at the ``view`` level builds before its run: the policy's part
    of the mount table (prebuilt.split) and the policy and plan it is built from."""
    policy: Policy
    plan: FsPlan
    early: tuple[Step, ...]
    real: tuple[tuple[str, str], ...]
    # the recipe run's work directory and output: Landlock's rules at or under them are
    # the run's own, made at the run (prebuilt.Prebuilt.ahead)
    workdir: str = "/"
    output: str = ""


@dataclass(frozen=True)
class Recipe:
    """How to make a stub of one key: what its shape names, nothing per run."""
    network: bool           # its own network namespace
    memory: int | None
    processes: int | None
    view: ViewRecipe | None = None


def recipe_of(policy: Policy, view: ViewRecipe | None = None) -> Recipe:
    return Recipe(network=policy.network.mode != "host", memory=policy.limits.memory,
                  processes=policy.limits.processes, view=view)


# the host's mount table's digest, and each /etc source's (dev, ino, size, mtime, ctime)
HostState = tuple[bytes, tuple[tuple[int, int, int, int, int] | None, ...]]


def host_state() -> HostState:
    """What a pooled view depends on besides its binds' sources: the host's mount table
    (a mount made since would be missing from it) and the /etc files its copies were
    made from (sysview.etc_files)."""
    import hashlib   # here: OpenSSL's start-up (~2 ms) is not an exec'd monitor's
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = hashlib.sha256(f.read()).digest()
    except OSError:
        table = b""
    files: list[tuple[int, int, int, int, int] | None] = []
    for name in sysview.ETC_FILES:
        try:
            st = os.stat("/etc/" + name)
            files.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            files.append(None)
    return table, tuple(files)


@dataclass
class ViewState:
    """A pooled view: the early steps it was built with, the host's state when it was
    asked for (`host_state`), and the (path, device, inode) of each bound source and
    each masked object, as mounted on."""
    early: tuple[Step, ...]
    state: HostState
    sources: list[tuple[str, int, int]] = field(default_factory=list)
    # each directory its Landlock rules were listed from (prebuilt.py): an entry added,
    # removed or replaced there since changes its stamp
    dirs: list[tuple[str, int, int, int, int]] = field(default_factory=list)

    def fresh(self, early: tuple[Step, ...], state: HostState) -> bool:
        """Whether it is the view a cold start of a run with `early` steps would build
        now, the host being in `state`."""
        if early != self.early or state != self.state:
            return False
        for path, dev, ino in self.sources:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                return False
            if (st.st_dev, st.st_ino) != (dev, ino):
                return False
        for path, dev, ino, mtime, ctime in self.dirs:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                return False
            if (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) != (dev, ino, mtime, ctime):
                return False
        return True


class Pooled:
    """A ready stub in a pool: discarding it ends the stub and frees its cgroups."""

    def __init__(self, pre: stubs.Prestarted, remove_cgroup: Callable[["RunCgroup"], None],
                 view: ViewState | None = None) -> None:
        self.pre, self._remove, self.view = pre, remove_cgroup, view

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
                 settings: Settings | None = None, scratch: str | None = None) -> None:
        self.zygote, self._watch, self._unwatch, self._defer = zygote, watch, unwatch, defer
        self.scratch = scratch   # where pooled views are built (prebuilt.py); None: no views
        self._closing = False
        self.pools: Pools[Pooled] = Pools(settings)
        self.recipes: dict[PoolKey, Recipe] = {}
        self._starting: dict[int, stubs.Prestarted] = {}   # by status socket fd
        self._viewing: dict[int, stubs.Prestarted] = {}    # by setup socket fd
        self._n = 0
        # per key: stubs ready so far, and the last measured cost (MEASURE_EVERY)
        self._fills: dict[PoolKey, tuple[int, int | None]] = {}

    def _remove(self, cg: "RunCgroup") -> None:
        """Free a discarded stub's cgroups: off the loop, or now when the host ends."""
        if self._closing:
            cg.remove()
        else:
            self._defer(cg.remove)

    def take(self, spec: Spec, ctx: ContainContext | None = None) -> stubs.Prestarted | None:
        """A ready stub of the run's key (its cgroups carry the run's limits; at the
        ``view`` level its view is built too), or None. `ctx`: the host's context of the
        run (its policy and plan, the spec's parsed once); a run that may take a view
        gets its mount table computed here, into `ctx.mount_table` (runspec.pid1_start
        sends that one)."""
        policy = Policy.from_dict(spec.policy) if ctx is None else ctx.policy
        view = self._view_of(spec, ctx)
        keyed = pool_key.for_spec(spec, "view" if view is not None else LEVEL, policy,
                                  None if ctx is None else ctx.fs_plan,
                                  early=None if view is None else view.early)
        if keyed is None:
            return None
        key, sources = keyed
        # this run's own recipe, always (never one recorded for an earlier pool of the key)
        self.recipes[key] = recipe_of(policy, view)
        usable: Callable[[Pooled], bool] = _waiting
        if view is not None:
            now, early = host_state(), view.early
            usable = lambda item: (_waiting(item) and item.view is not None  # noqa: E731
                                   and item.view.fresh(early, now))
        got = self.pools.take(key, sources, usable=usable)
        return got.pre if got is not None else None   # refills: `refill`, after the turn

    def _view_of(self, spec: Spec, ctx: ContainContext | None) -> ViewRecipe | None:
        """The run's view recipe, when it may be pooled at the ``view`` level: an exec'd
        program or a Python action (whose setup child finishes the view: planned.py), in
        namespaces, without a terminal, whose table splits (prebuilt.split)."""
        if (self.scratch is None or ctx is None or spec.mode not in prebuilt.VIEW_MODES
                or not ctx.namespaces or spec.stdio.tty is not None):
            return None
        try:
            table = mount_plan.prepare(ctx.fs_plan)
        except Exception:
            return None   # PID 1 computes it, and fails the mount layer with the reason
        ctx.mount_table = table
        got = prebuilt.split(table.steps, prebuilt.run_dirs(ctx.paths))
        if got is None:
            return None
        return ViewRecipe(ctx.policy, ctx.fs_plan, tuple(got[0]), tuple(table.real.items()),
                          ctx.paths.workdir, ctx.paths.output)

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
        state = host_state() if recipe.view is not None else None   # before the fork
        try:
            pre = stubs.make(self.zygote, cg, namespaces=True, network=recipe.network)
        except OSError:
            if cg is not None:
                self._remove(cg)
            self.pools.failed(ticket)
            return
        pre.limits_written = True
        self._starting[pre.status.fileno()] = pre
        self._watch(pre.status, lambda: self._ready(ticket, pre, recipe, state))

    def _ready(self, ticket: Ticket, pre: stubs.Prestarted, recipe: Recipe,
               state: HostState | None) -> None:
        self._unwatch(pre.status)
        if self._starting.pop(pre.status.fileno(), None) is None:
            return   # discarded already (`_drop_starting`), its event still in the batch
        ready = pre.take_ready()
        if ready is None or not ready.ok:
            Pooled(pre, self._remove).discard()
            self.pools.failed(ticket)
            return
        if recipe.view is None or state is None:
            self._filled(ticket, pre, None)
            return
        vs = ViewState(recipe.view.early, state)
        try:
            pre.go.send(protocol.start_to_bytes(runspec.view_start(self._view_context(
                recipe.view, pre))))
        except (OSError, ProtocolError):
            Pooled(pre, self._remove).discard()
            self.pools.failed(ticket)
            return
        self._viewing[pre.setup.fileno()] = pre
        self._watch(pre.setup, lambda: self._view_ready(ticket, pre, vs))

    def _view_context(self, view: ViewRecipe, pre: stubs.Prestarted) -> ContainContext:
        """What the pooled PID 1 builds from: the policy and plan, the early steps, the
        stub's own cgroups (the view's /sys/fs/cgroup), the scratch directory, and the
        recipe run's own directories (only to tell its Landlock rules apart)."""
        assert self.scratch is not None
        return ContainContext(
            policy=view.policy, paths=RunPaths(rundir=self.scratch, workdir=view.workdir,
                                               output=view.output, tmp=""),
            fs_plan=view.plan, ipc_fd=-1, monitor_fd=-1, outer_uid=os.getuid(),
            outer_gid=os.getgid(), namespaces=True, audit_files=view.policy.audit.files,
            cgroup_view=getattr(pre.cgroup, "view", ()),
            mount_table=Prepared(view.plan, list(view.early), dict(view.real)))

    def _view_ready(self, ticket: Ticket, pre: stubs.Prestarted, vs: ViewState) -> None:
        self._unwatch(pre.setup)
        if self._viewing.pop(pre.setup.fileno(), None) is None:
            return   # discarded already (`_drop_starting`), its event still in the batch
        msg: ViewReady | None = None
        fds: list[int] = []
        sender = 0
        try:
            msg, fds, sender = stubs.recv_setup(pre.setup, (ViewReady,))
        except (OSError, ProtocolError):
            pass
        for fd in fds:
            os.close(fd)
        if msg is None or not msg.ok or fds or sender != pre.pid1:   # PID 1's, no other's
            Pooled(pre, self._remove).discard()
            self.pools.failed(ticket)
            return
        vs.sources = [(p, d, i) for p, d, i in msg.sources]
        vs.dirs = [(p, d, i, m, c) for p, d, i, m, c in msg.dirs]
        pre.view_built = True
        self._filled(ticket, pre, vs)

    def _filled(self, ticket: Ticket, pre: stubs.Prestarted, vs: ViewState | None) -> None:
        n, cost = self._fills.get(ticket.key, (0, None))
        if n % MEASURE_EVERY == 0 or cost is None:
            cost = private_bytes(pre.pid1 or pre.stub_pid)
        self._fills[ticket.key] = (n + 1, cost)
        self.pools.filled(ticket, Pooled(pre, self._remove, vs), cost)

    def sweep(self) -> None:
        self.pools.sweep()

    def _drop_starting(self) -> None:
        for pre in list(self._starting.values()):
            self._unwatch(pre.status)
            Pooled(pre, self._remove).discard()
        self._starting.clear()
        for pre in list(self._viewing.values()):
            self._unwatch(pre.setup)
            Pooled(pre, self._remove).discard()
        self._viewing.clear()

    def zygote_died(self) -> None:
        """Every stub here died with the zygote that forked them: discard them all; the
        pools and their targets stay, and `refill` starts them on the new zygote."""
        self._drop_starting()
        self.pools.empty()

    def close(self) -> None:
        self._closing = True
        self._drop_starting()
        self.pools.close()
