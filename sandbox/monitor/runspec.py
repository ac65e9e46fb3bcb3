"""The run's spec (sandbox.protocol.Spec) turned into the containment context.

A leaf module: the monitor (supervisor.py), a spare's stub (spare.py) and
PID 1 all build their `ContainContext` here, and nothing here imports them
back (issue 14: no import cycle in monitor/).
"""
from __future__ import annotations

import os

from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan
from sandbox.protocol import Spec


def build_context(spec: Spec) -> ContainContext:
    policy = Policy.from_dict(spec.policy)
    return ContainContext(
        policy=policy,
        paths=RunPaths(rundir=spec.paths.rundir, workdir=spec.paths.workdir,
                       output=spec.paths.output, tmp=spec.paths.tmp),
        fs_plan=FsPlan.from_dict(spec.fs_plan),
        ipc_fd=spec.ipc_fd,
        monitor_fd=-1,
        outer_uid=os.getuid(),
        outer_gid=os.getgid(),
        namespaces=spec.namespaces,
        audit_files=policy.audit.files,
    )


def use_ipc_fd(spec: Spec, fd: int) -> None:
    """The IPC descriptor came through SCM_RIGHTS under a new number: say so to the
    containment sequence (spec.ipc_fd) and to the program (SANDBOX_IPC_FD)."""
    spec.ipc_fd = fd
    spec.env["SANDBOX_IPC_FD"] = str(fd)
