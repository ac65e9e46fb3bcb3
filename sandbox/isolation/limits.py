"""Resource limits with setrlimit: CPU, address space, files, processes, core 0.

cgroups (memory, pids) are applied from outside by the monitor, because a
process must not be trusted to put itself in its own cage; rlimits are the
part the sandboxee sets on itself before it gives up its privileges (a
Python action's PID 1 has its setup child set them on it with prlimit(2),
`_set`: the same values, at the same point of the sequence). When the
cgroup memory controller enforces `limits.memory`, RLIMIT_AS is not also set:
address space overstates real use (Python maps far more than it touches) and
the cgroup gives an accurate OOM verdict instead of a MemoryError.

When RLIMIT_AS is the memory bound (no memory cgroup, e.g. an unprivileged
caller without delegation), every thread's stack *reservation* counts: glibc
reserves RLIMIT_STACK (8 MiB) per thread, so 100 threads would need 800 MiB of
address space under strict's 512 MiB. The soft RLIMIT_STACK is then lowered to
AS_THREAD_STACK, the default size of each new thread's stack (and of the main
stack; the hard limit is kept, so `ulimit -s` can raise it for a program that
recurses deeply), unless the program's command line needs more: an execve may
take a quarter of the stack limit, so a long one keeps four times its size
(`exec_stack`). glibc's malloc also reserves up to 64 MiB of address space
per arena, one arena per thread up to 8 per core: MALLOC_ARENA_MAX=2 goes into
the program's environment unless the policy's [env] sets it. With both, a
100-thread Python program runs under 512 MiB of address space.
"""
from __future__ import annotations

import math
import os
import resource

from sandbox.errors import SetupError
from sandbox.isolation.context import ContainContext
from sandbox.isolation.libc import write_file

# Per-user kernel resources (inotify instances and watches, fanotify, namespaces,
# POSIX message queue bytes, pending signals, locked shm) are counted per uid, and
# a sandbox runs as its caller's uid: without a bound, one sandbox could take them
# all from the caller and from every other sandbox of that user. Each sandbox gets
# 1/USER_NS_SHARE of what its parent allows: the /proc/sys/user/max_* of its own
# user namespace (the kernel charges each namespace's count to every ancestor, so
# a lower maximum here bounds the sandbox's share of the uid's) and the
# per-user rlimits below (checked against the caller's count in the namespace).
# Not boundable this way: keyring quotas (per host uid; the default seccomp
# profile denies keyctl/add_key/request_key) -- see docs/threat-model.md.
AS_THREAD_STACK = 2 * 1024 * 1024
# the room an execve's own arguments leave beside the caller's (the init's few, the
# kernel's auxiliary vector), for `_thread_stacks`
EXEC_ROOM = 64 * 1024
AS_ARENA_MAX = "2"
USER_NS_SHARE = 8
USER_NS_DIR = "/proc/sys/user"
_PER_USER_RLIMITS = (resource.RLIMIT_MSGQUEUE, resource.RLIMIT_SIGPENDING,
                     resource.RLIMIT_MEMLOCK)


def _share(value: int) -> int:
    return max(1, value // USER_NS_SHARE)


_CAPS: list[dict[str, int]] = []   # read once in the warm template (`warm_user_ns_caps`)


def warm_user_ns_caps() -> None:
    """Read the caps once in the fork server's template, before the zygote is forked:
    every stub is a fork of it, and reading ten /proc files in each would write ~300
    KiB of the template's pages that its sandbox's PID 2 then owns (docs/benchmarks-journal.md).
    A cap the host changes later is still enforced: a user namespace's counts are
    charged to its parent's too, so a stale share is never above the real bound."""
    _CAPS[:] = [user_ns_caps(cached=False)]


def user_ns_caps(*, cached: bool = True) -> dict[str, int]:
    """Each /proc/sys/user/max_* this sandbox may have: a share of the current
    (parent) namespace's. Read BEFORE unshare: a new user namespace reads as
    unlimited (INT_MAX) at its own level."""
    if cached and _CAPS:
        return _CAPS[0]
    caps: dict[str, int] = {}
    try:
        names = sorted(n for n in os.listdir(USER_NS_DIR) if n.startswith("max_"))
    except OSError:
        return caps
    for name in names:
        try:
            with open(os.path.join(USER_NS_DIR, name)) as f:
                caps[name] = _share(int(f.read()))
        except (OSError, ValueError):
            continue
    return caps


def bound_user_ns(caps: dict[str, int]) -> None:
    """Write `caps` into the user namespace just entered (its creator holds
    CAP_SYS_RESOURCE there; the sandbox drops it later, so cannot raise them).
    Raises SetupError("limits") when one cannot be written."""
    for name, value in caps.items():
        try:
            write_file(os.path.join(USER_NS_DIR, name), str(value))
        except OSError as exc:
            raise SetupError("limits", f"cannot bound {USER_NS_DIR}/{name} to {value} in the "
                             f"sandbox's user namespace ({exc.strerror or exc})") from None


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
    for res in _PER_USER_RLIMITS:   # a share of the caller's per-user quotas
        soft, hard = resource.getrlimit(res)
        if soft != resource.RLIM_INFINITY:
            out[res] = _share(soft) if soft > 0 else 0
    return out


def _set(ctx: ContainContext, res: int, value: tuple[int, int]) -> None:
    """setrlimit, or prlimit(2) on `ctx.rlimit_pid`: a Python action's PID 1 has its
    setup child set its limits (sandbox/sandboxee/planned.py), a fork of it with the
    same credentials, so that the layer's Python copies no page the program keeps."""
    if ctx.rlimit_pid:
        resource.prlimit(ctx.rlimit_pid, res, value)
    else:
        resource.setrlimit(res, value)


def _thread_stacks(ctx: ContainContext, limits: dict[int, int]) -> None:
    """Under an RLIMIT_AS memory bound: smaller default thread stacks (module doc)."""
    if resource.RLIMIT_AS not in limits:
        return
    os.environ.setdefault("MALLOC_ARENA_MAX", AS_ARENA_MAX)   # the program's env (entry.py)
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    stack = max(AS_THREAD_STACK, exec_stack(ctx.exec_bytes))
    if soft == resource.RLIM_INFINITY or soft > stack:
        try:
            _set(ctx, resource.RLIMIT_STACK, (stack, hard))
        except (ValueError, OSError) as exc:
            raise SetupError("limits", f"setrlimit(RLIMIT_STACK, {stack}): {exc}") from None


def exec_stack(exec_bytes: int) -> int:
    """The least RLIMIT_STACK whose execve takes a command line of `exec_bytes`: the
    kernel gives argv and env a quarter of it (fs/exec.c). A command line that fits
    the caller's own stack limit (60,000 names from `find -exec ... +`) must not fail
    in the sandbox with E2BIG because thread stacks were made smaller; so a long
    one keeps a larger stack, rounded up to whole MiB."""
    need = 4 * (exec_bytes + EXEC_ROOM)
    return -(-need // (1 << 20)) << 20


def apply(ctx: ContainContext) -> None:
    wanted = rlimits_for(ctx)
    _thread_stacks(ctx, wanted)
    for res, value in wanted.items():
        soft, hard = resource.getrlimit(res)
        new = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # CPU: SIGXCPU at the limit, SIGKILL a second later for a program that
        # ignores it. With soft = hard both race, and SIGKILL hides the cause.
        new_hard = new + 1 if res == resource.RLIMIT_CPU and (
            hard == resource.RLIM_INFINITY or new + 1 <= hard) else new
        try:
            _set(ctx, res, (new, new_hard))
        except (ValueError, OSError) as exc:
            raise SetupError("limits", f"setrlimit({res}, {new}): {exc}") from None
    ctx.active.append("limits")
