"""Resource limits with setrlimit: CPU, address space, files, processes, core 0.

cgroups (memory, pids) are applied from outside by the monitor, because a
process must not be trusted to put itself in its own cage; rlimits are the
part the sandboxee sets on itself before it gives up its privileges. When the
cgroup memory controller enforces `limits.memory`, RLIMIT_AS is not also set:
address space overstates real use (Python maps far more than it touches) and
the cgroup gives an accurate OOM verdict instead of a MemoryError.
"""
from __future__ import annotations

import math
import resource

from sandbox.errors import SetupError
from sandbox.isolation.context import ContainContext


def rlimits_for(ctx: ContainContext) -> dict[int, int]:
    """The limits to set, by resource constant (soft = hard, except CPU: see apply)."""
    lim = ctx.policy.limits
    out: dict[int, int] = {resource.RLIMIT_CORE: 0}
    if lim.cpu is not None:
        out[resource.RLIMIT_CPU] = max(1, math.ceil(lim.cpu))
    if lim.memory is not None and not ctx.cgroup_memory:
        out[resource.RLIMIT_AS] = lim.memory
    if lim.open_files is not None:
        out[resource.RLIMIT_NOFILE] = lim.open_files
    if lim.processes is not None:
        out[resource.RLIMIT_NPROC] = lim.processes
    if lim.file_size is not None:
        out[resource.RLIMIT_FSIZE] = lim.file_size
    return out


def apply(ctx: ContainContext) -> None:
    for res, value in rlimits_for(ctx).items():
        soft, hard = resource.getrlimit(res)
        new = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # CPU: SIGXCPU at the limit, SIGKILL a second later for a program that
        # ignores it. With soft = hard both race, and SIGKILL hides the cause.
        new_hard = new + 1 if res == resource.RLIMIT_CPU and (
            hard == resource.RLIM_INFINITY or new + 1 <= hard) else new
        try:
            resource.setrlimit(res, (new, new_hard))
        except (ValueError, OSError) as exc:
            raise SetupError("limits", f"setrlimit({res}, {new}): {exc}") from None
    ctx.active.append("limits")
