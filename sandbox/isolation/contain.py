"""The containment sequence: one ordered list of layers, as in nsjail's containProc.

    namespaces -> mounts -> network -> limits -> privileges -> landlock -> seccomp

Runs in the sandboxee (PID 1 of its namespaces) right after it was forked by
the stub, whether the monitor came from an exec of the bootstrap or from the
warm fork server. Seccomp is last so that every earlier step may still use
the syscalls it needs. A layer that cannot be applied raises `SetupError`;
the run then ends as `setup_error`, unless the policy says `best_effort =
true`, in which case the layer is recorded in `ctx.skipped` and the
RunResult lists it: never silently weaker.
"""
from __future__ import annotations

import time
from typing import Callable

from sandbox.errors import SetupError
from sandbox.isolation import (landlock, limits, mounts, namespaces, network, privileges,
                               seccomp)
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
NEEDS_NAMESPACES = frozenset({"namespaces", "mounts", "network"})


def contain(ctx: ContainContext, *, until: str | None = None) -> ContainContext:
    """Apply every layer in order (or up to and including `until`, for tests)."""
    for name, layer in SEQUENCE:
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
        if name == until:
            break
    return ctx
