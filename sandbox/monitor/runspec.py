"""The run's spec (sandbox.protocol.Spec) turned into the containment context.

A leaf module: the monitor host builds its `ContainContext` here, and the one it
hands PID 1 (`pid1_start`, taken back by `from_start`); nothing here imports
them back (issue 14: no import cycle in monitor/).
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Mapping, Sequence

from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.isolation.mount_steps import KINDS
from sandbox.monitor.interned import share
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan
from sandbox.errors import ProtocolError
from sandbox.protocol import SPEC_MAX, Pid1Start, Spec


def build_context(spec: Spec) -> ContainContext:
    """The monitor host's context of a run, from the spec it decoded: its policy and
    plan made of the parts the host already holds for other runs (`interned`)."""
    policy = share(Policy.from_dict(spec.policy))
    plan = share(FsPlan.from_dict(spec.fs_plan))
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
        exec_bytes=exec_bytes(spec.argv or (), spec.env),
    )


def exec_bytes(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """The stack an execve of `argv` with `env` takes: its strings and their pointers
    (as bytes: a name that is not UTF-8 holds surrogates, os.fsencode's)."""
    strings = sum(len(os.fsencode(a)) + 1 for a in argv) + \
        sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 for k, v in env.items())
    return strings + 8 * (len(argv) + len(env) + 2)


def pid1_start(spec: Spec, ctx: ContainContext) -> Pid1Start:
    """What the host sends PID 1 (protocol.Pid1Start): a fresh context of the run, with
    what only the host knows (its cgroups, the mount table of its plan, computed here
    in the warm host: in PID 1, a fresh fork of the template, the same work cost ~1 ms
    of CPU per run, each object it touches a page copy), and the spec without its
    policy and plan (the context holds them, parsed). No table when it cannot be made:
    PID 1 then computes it itself, and fails the mount layer with the reason (a rule
    path swapped for a link since the plan: ELOOP). Over one datagram, `context` goes
    in a memfd (stubs.go); over SPEC_MAX it is a ProtocolError, as the spec was.

    The table is handed over, not copied: `ctx` (the host's) holds none afterwards.
    A live run's context is the host's memory for the run's whole life (issue 14: at
    most 64 KiB of the host per live run), and its table was ~8 KiB of it; nothing in
    the host reads it after the start, and a restub makes it again."""
    table, ctx.mount_table = ctx.mount_table, None   # made when the run took a pooled view
    if not ctx.namespaces:   # without them the mount layer is skipped
        table = None
    elif table is None or table.plan is not ctx.fs_plan:
        from sandbox.isolation import mount_plan
        try:
            table = mount_plan.prepare(ctx.fs_plan)
        except Exception:
            table = None
    fresh = ContainContext(policy=ctx.policy, paths=ctx.paths, fs_plan=ctx.fs_plan,
                           ipc_fd=-1, monitor_fd=-1, outer_uid=ctx.outer_uid,
                           outer_gid=ctx.outer_gid, namespaces=ctx.namespaces,
                           audit_files=ctx.audit_files, cgroup_memory=ctx.cgroup_memory,
                           exec_bytes=ctx.exec_bytes,
                           cgroup_view=tuple(ctx.cgroup_view), mount_table=table)
    lite = dataclasses.replace(spec, policy={}, fs_plan={})
    blob = pickle.dumps((lite, fresh), protocol=pickle.HIGHEST_PROTOCOL)
    if len(blob) > SPEC_MAX:
        raise ProtocolError(f"spec: {len(blob)} bytes for PID 1, over {SPEC_MAX}")
    return Pid1Start(mode=spec.mode, context=blob)


def view_start(ctx: ContainContext) -> Pid1Start:
    """What the host sends a PID 1 pooled at the "view" level before any run: the context
    it builds the policy's part of its view from (sandbox/isolation/prebuilt.py)."""
    return Pid1Start(mode="view", context=pickle.dumps(ctx, protocol=pickle.HIGHEST_PROTOCOL))


def from_view_start(context: bytes) -> ContainContext:
    """`view_start`'s context back, in the pooled PID 1; ProtocolError when it is not one."""
    ctx = _unpickled(context, "pid1 view start")
    if not isinstance(ctx, ContainContext):
        raise ProtocolError("pid1 view start: not a context")
    _known_steps(ctx)
    return ctx


def _unpickled(context: bytes, what: str) -> object:
    try:
        return pickle.loads(context)
    except Exception as exc:
        raise ProtocolError(f"{what}: {type(exc).__name__}") from None


def _known_steps(ctx: ContainContext) -> None:
    if ctx.mount_table is not None:
        for st in ctx.mount_table.steps:   # a step the layer cannot perform fails the run
            if st.kind not in KINDS:
                raise ProtocolError(f"pid1 start: a mount step of unknown kind {st.kind!r:.40}")


def from_start(context: bytes, ipc_fd: int, exit_fd: int,
               monitor_fd: int) -> tuple[Spec, ContainContext]:
    """In PID 1 (or a Python action's setup child): `pid1_start`'s spec and context back,
    with the run's descriptors as they arrived (its ipc and exit pipe) and the setup
    socket to the monitor. ProtocolError when it is not one."""
    got = _unpickled(context, "pid1 start")
    if not (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], Spec)
            and isinstance(got[1], ContainContext)):
        raise ProtocolError("pid1 start: not a spec and its context")
    spec, ctx = got
    _known_steps(ctx)
    use_ipc_fd(spec, ipc_fd)
    ctx.ipc_fd, ctx.monitor_fd, ctx.exit_fd = ipc_fd, monitor_fd, exit_fd
    return spec, ctx


def use_ipc_fd(spec: Spec, fd: int) -> None:
    """The IPC descriptor came through SCM_RIGHTS under a new number: say so to the
    containment sequence (spec.ipc_fd) and to the program (SANDBOX_IPC_FD)."""
    spec.ipc_fd = fd
    spec.env["SANDBOX_IPC_FD"] = str(fd)
