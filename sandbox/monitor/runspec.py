"""The run's spec (sandbox.protocol.Spec) turned into the containment context.

A leaf module: the monitor (supervisor.py), a spare's stub (spare.py) and
PID 1 all build their `ContainContext` here, and nothing here imports them
back (issue 14: no import cycle in monitor/).
"""
from __future__ import annotations

import os
import sys
from typing import TypeVar

from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.isolation.mount_steps import KINDS, Prepared
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan
from sandbox.errors import ProtocolError
from sandbox.protocol import MountStep, MountTable, Spec, bounds_of


def build_context(spec: Spec) -> ContainContext:
    policy = Policy.from_dict(spec.policy)
    plan = FsPlan.from_dict(spec.fs_plan)
    return ContainContext(
        policy=policy,
        paths=RunPaths(rundir=spec.paths.rundir, workdir=spec.paths.workdir,
                       output=spec.paths.output, tmp=spec.paths.tmp),
        fs_plan=plan,
        ipc_fd=spec.ipc_fd,
        monitor_fd=-1,
        outer_uid=os.getuid(),
        outer_gid=os.getgid(),
        namespaces=spec.namespaces,
        audit_files=policy.audit.files,
        mount_table=mount_table_from_wire(plan, spec.mount_table),
    )


def mount_table_wire(plan: FsPlan) -> MountTable | None:
    """The mount table of `plan` (mounts.prepare) for the spec, computed in the warm
    monitor host: in PID 1, a fresh fork of the template, the same work cost ~1 ms of
    CPU per run (each object it touches is a page copy; docs/benchmarks.md). None when
    it cannot be made, or would not fit the spec's bounds (the spec is never cut short:
    a table missing a mask would be a wider view): PID 1 then computes it itself, and
    fails the mount layer with the reason (a rule path swapped for a link since the
    plan: ELOOP)."""
    from sandbox.isolation import mounts
    try:
        prep = mounts.prepare(plan)
    except Exception:
        return None
    table = MountTable(steps=prep.steps, real=list(prep.real.items()))
    return table if _fits(table) else None


# MountTable's and MountStep's own bounds (sandbox/protocol.py), read once
_STEPS, _REAL = bounds_of(MountTable, "steps"), bounds_of(MountTable, "real")
_KIND, _PATH, _SOURCE = (bounds_of(MountStep, name).chars
                         for name in ("kind", "path", "source"))


def _fits(table: MountTable) -> bool:
    """Within MountTable's bounds, counted the way the encoder may spend them: at most
    12 bytes of JSON per character (a surrogate pair escaped) plus each item's frame.
    (The codec's own check, `protocol.to_obj`, costs ~70 us per run in the host's loop
    against ~4 us for this estimate, and the spec is encoded once more to be sent.)"""
    if len(table.steps) > _STEPS.items or len(table.real) > _REAL.items:
        return False
    steps = real = 0
    for st in table.steps:
        if len(st.path) > _PATH or len(st.source) > _SOURCE or len(st.kind) > _KIND:
            return False
        steps += 12 * (len(st.path) + len(st.source) + len(st.kind)) + 96
    for rule, where in table.real:
        if len(rule) > _REAL.chars or len(where) > _REAL.chars:
            return False
        real += 12 * (len(rule) + len(where)) + 16
    return ((_STEPS.budget is None or steps <= _STEPS.budget)
            and (_REAL.budget is None or real <= _REAL.budget))


def mount_table_from_wire(plan: FsPlan, table: MountTable | None) -> Prepared | None:
    """`mount_table_wire`'s table back, for `plan`; None when the spec has none. Its
    shape is the protocol's to check (Spec's decoding); a step of a kind the mount
    layer does not know is a ProtocolError here (the stub reports it: the run fails
    closed)."""
    if table is None:
        return None
    for st in table.steps:
        if st.kind not in KINDS:
            raise ProtocolError(f"spec: a mount table step of unknown kind {st.kind!r:.40}")
    return Prepared(plan, table.steps, dict(table.real))


J = TypeVar("J")


def shared_strings(obj: J) -> J:
    """`obj` (a JSON value) with every string interned. The monitor host keeps each live
    run's policy and plan (issue 14: at most 64 KiB of the host per run), and the runs
    of one policy spell the same rules: decoded apart, each run held its own copy of
    every path and pattern (~11 KiB per run); interned, they hold one between them, and
    a run's own strings (its directories) go with it (3.11's interned strings are
    freed with their last reference)."""
    # A string in a list or a value is interned in place, without a call of its own:
    # most of a policy's values are strings (this walk was ~6% of the host's loop
    # thread per run).
    _i = sys.intern
    if isinstance(obj, str):
        return _i(obj)  # type: ignore[return-value]
    if isinstance(obj, list):
        return [_i(x) if type(x) is str else shared_strings(x)
                for x in obj]  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {_i(k) if isinstance(k, str) else k: _i(v) if type(v) is str
                else shared_strings(v) for k, v in obj.items()}  # type: ignore[return-value]
    return obj


def use_ipc_fd(spec: Spec, fd: int) -> None:
    """The IPC descriptor came through SCM_RIGHTS under a new number: say so to the
    containment sequence (spec.ipc_fd) and to the program (SANDBOX_IPC_FD)."""
    spec.ipc_fd = fd
    spec.env["SANDBOX_IPC_FD"] = str(fd)
