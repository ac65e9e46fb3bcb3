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


J = TypeVar("J")


def shared_strings(obj: J) -> J:
    """`obj` (a JSON value) with every string interned. The monitor host keeps each live
    run's policy and plan (issue 14: at most 64 KiB of the host per run), and the runs
    of one policy spell the same rules: decoded apart, each run held its own copy of
    every path and pattern (~11 KiB per run); interned, they hold one between them, and
    a run's own strings (its directories) go with it (3.11's interned strings are
    freed with their last reference)."""
    if isinstance(obj, str):
        return sys.intern(obj)  # type: ignore[return-value]
    if isinstance(obj, list):
        return [shared_strings(x) for x in obj]  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {sys.intern(k) if isinstance(k, str) else k: shared_strings(v)
                for k, v in obj.items()}  # type: ignore[return-value]
    return obj


def use_ipc_fd(spec: Spec, fd: int) -> None:
    """The IPC descriptor came through SCM_RIGHTS under a new number: say so to the
    containment sequence (spec.ipc_fd) and to the program (SANDBOX_IPC_FD)."""
    spec.ipc_fd = fd
    spec.env["SANDBOX_IPC_FD"] = str(fd)
