"""What every containment layer receives: the resolved policy and the run's facts.

One object, built by the monitor before it forks the sandboxee, so that the
same sequence runs whether the sandboxee was started by exec of the bootstrap
or forked from the warm fork server.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.isolation.mount_steps import Prepared
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan


@dataclass
class RunPaths:
    """Host paths of one run. All exist before the sandboxee starts."""
    rundir: str      # private per-run directory on the host (removed afterwards)
    workdir: str     # the program's working directory (`${WORKDIR}`)
    output: str      # where the action may write results (`${OUTPUT}`)
    tmp: str         # host directory backing the private /tmp when there is no mount namespace


# slots: the monitor host keeps one context per live run for the run's life, and an
# instance dict of these ~30 fields was ~0.8 KiB of it (issue 14: <= 64 KiB of the host
# per live run); no code sets an attribute that is not a field.
@dataclass(slots=True)
class ContainContext:
    policy: Policy                       # resolved: no ${VARIABLES} left
    paths: RunPaths
    fs_plan: FsPlan                      # what the mount and Landlock layers enforce
    ipc_fd: int                          # the sandboxee's end of the IPC socket
    monitor_fd: int                      # socket to the monitor (listener fd, setup report)
    keep_fds: tuple[int, ...] = ()       # descriptors to keep besides stdio, ipc and monitor
    hostname: str = "sandbox"
    outer_uid: int = 0
    outer_gid: int = 0
    namespaces: bool = True              # False only under best_effort without user namespaces
    audit_files: str = "none"            # none | denied | all (from policy.audit.files)
    active: list[str] = field(default_factory=list)   # layers applied, in order
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why (best_effort only)
    listener_fd: int | None = None       # seccomp notification fd, set by the seccomp layer
    output_fd: int | None = None         # the ${OUTPUT} tmpfs, set by the mount layer (copy-out)
    cow_fd: int | None = None            # the copy-on-write layer's tmpfs (export), ditto
    timings: dict[str, float] = field(default_factory=dict)  # seconds per layer
    cgroup_memory: bool = False          # the monitor enforces limits.memory with a cgroup
    # the run's own cgroups, shown read-only at /sys/fs/cgroup (sysview.py): v1 controller
    # names, "unified" for its v2 cgroup; empty when the run has none
    cgroup_view: tuple[str, ...] = ()
    init_fd: int = -1                    # O_PATH descriptor of sandbox-init, opened before the view
    exit_fd: int = -1                    # pipe to the monitor for the program's wait status
    tty: str | None = None               # host path of the run's own pty (exec -t), bound at /dev
    scratch_fd: int = -1                 # O_PATH of the view's /tmp, for the monitor (mounts)
    shm_fd: int = -1                     # ... and of its /dev/shm
    # the mount layer's table and each rule's real path, computed by the monitor before
    # the fork (mount_plan.prepare), else by the mount layer; Landlock's rules use it too
    mount_table: Prepared | None = None
    # made ahead by PID 1's setup child (sandbox/isolation/apart.py) for the later layers:
    landlock_ruleset: int = -1           # the Landlock ruleset, enforced as is
    landlock_abi: int = 0                # ... and the ABI it was built for
    landlock_error: str = ""             # ... or why it could not be built
    seccomp_program: bytes = b""         # the BPF program to install
    rlimit_pid: int = 0                  # whose limits the limits layer sets (0: its own)
    # what the program's execve takes of the stack (argv and env strings and pointers):
    # the limits layer keeps RLIMIT_STACK at least 4x it (limits._thread_stacks)
    exec_bytes: int = 0
    # a pooled PID 1's view, built before the run was known (sandbox/isolation/prebuilt.py:
    # a `Prebuilt`); set by PID 1 itself, never sent
    prebuilt: Any = None
