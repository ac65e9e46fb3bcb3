"""The containment sequence: one ordered list of layers, as in nsjail's containProc.

    namespaces -> mounts -> network -> limits -> privileges -> landlock -> seccomp

Runs in the sandboxee (PID 1 of its namespaces) right after it was forked by
the stub, whether the monitor came from an exec of the bootstrap or from the
warm fork server. Seccomp is last so that every earlier step may still use
the syscalls it needs. A layer that cannot be applied raises `SetupError`;
the run then ends as `setup_error`, unless the policy says `best_effort =
true`, in which case the layer is recorded in `ctx.skipped` and the
RunResult lists it: never silently weaker.

With `apart` (PID 1 does it), the namespace-wide layers, the sequence's first
three, run in a throw-away child of PID 1 (sandbox/isolation/apart.py): their
Python would otherwise leave ~1 MiB of copied pages to a Python action's PID 2.
The order is the same: the child has applied them before PID 1 goes on.
"""
from __future__ import annotations

import time
from typing import Callable

from sandbox.errors import SetupError
from sandbox.isolation import (apart as apart_mod, landlock, limits, mounts, namespaces,
                               network, privileges, seccomp)
from sandbox.isolation.context import ContainContext
from sandbox.sandboxee import memtrace

Layer = Callable[[ContainContext], None]

SEQUENCE: tuple[tuple[str, Layer], ...] = (
    ("namespaces", namespaces.apply),
    ("mounts", mounts.apply),
    ("network", network.apply),
    ("limits", limits.apply),
    ("privileges", privileges.apply),
    ("landlock", landlock.apply),
    ("seccomp", seccomp.apply),
)

# Layers that need the namespaces; skipped (and reported) when best_effort ran without them.
# They act on the namespaces, not on the process, and come first (`apart`).
NEEDS_NAMESPACES = frozenset({"namespaces", "mounts", "network"})


def contain(ctx: ContainContext, *, until: str | None = None,
            apart: bool = False, after: str | None = None,
            before_filter: Layer | None = None) -> ContainContext:
    """Apply every layer in order (or up to and including `until`, for tests); with
    `apart`, the namespace-wide ones in a throw-away child (module doc). With
    `after`, a Python action's setup child has applied the layers up to and including
    that one already, before PID 1 knew the run (sandbox/sandboxee/planned.py): only
    the rest is applied. `before_filter(ctx)` runs just before the seccomp layer: what
    PID 1 still sends the monitor then goes unmediated (once the filter is on, a
    private network makes every sendmsg wait for the monitor's answer)."""
    names = [name for name, _ in SEQUENCE]
    todo = SEQUENCE[:names.index(until) + 1] if until else SEQUENCE
    if after is not None:
        todo = todo[names.index(after) + 1:]
    shared = [step for step in todo if step[0] in NEEDS_NAMESPACES]
    if apart and ctx.namespaces and shared:
        last_pid = apart_mod.available()
        if last_pid >= 0:
            apart_mod.run(ctx, shared, _apply, last_pid,
                          _ahead if todo[-1][0] == "seccomp" else None)
            for name, _ in shared:
                memtrace.mark(f"pid1.{name}")
            todo = todo[len(shared):]
    for name, layer in todo:
        if name == "seccomp" and before_filter is not None:
            before_filter(ctx)
        _apply(ctx, name, layer)
    return ctx


def _ahead(ctx: ContainContext) -> None:
    """In the setup child, after the namespace-wide layers: what Landlock and seccomp
    compute before they enforce (the ruleset, the BPF program), so that PID 1 does
    not run that Python (apart.py). With no capability left first: the rules' paths
    are opened with no more privilege than PID 1 has when Landlock's turn comes."""
    privileges.drop_capabilities()
    try:
        ctx.landlock_ruleset, ctx.landlock_abi = landlock.build(ctx)
    except SetupError as exc:
        # PID 1 raises it at Landlock's turn (landlock.apply): the error, or the skip,
        # is its. The same build there, with no capability either, would fail the same.
        text, head = str(exc), f"{exc.layer}: "
        ctx.landlock_error = text[len(head):] if text.startswith(head) else text
    ctx.seccomp_program = seccomp.warm(ctx.policy.syscalls, ctx.audit_files,
                                       ctx.policy.network.mode)


def _apply(ctx: ContainContext, name: str, layer: Layer) -> None:
    """One layer, timed; under best_effort, one that cannot apply is recorded as skipped."""
    t0 = time.perf_counter()
    if name in NEEDS_NAMESPACES and not ctx.namespaces:
        ctx.skipped[name] = "no user namespace (best_effort)"
    else:
        try:
            layer(ctx)
        except SetupError as exc:
            if not ctx.policy.best_effort:
                raise
            ctx.skipped[exc.layer] = str(exc)
    ctx.timings[name] = time.perf_counter() - t0
    memtrace.mark(f"pid1.{name}")
