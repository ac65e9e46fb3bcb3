"""The policy as typed, immutable data.

A `Policy` is what the TOML loader produces and what every layer consumes:
the engine decides file operations from `filesystem`, the mount and Landlock
layers are compiled from the same `filesystem`, the seccomp layer from
`syscalls`, and so on. Paths may hold variables (``${OUTPUT}``) until
`sandbox.policy.variables.resolve` turns the policy into a concrete one for a
run; the kernel layers only ever see resolved policies.

Policies cross process boundaries (launcher -> monitor -> sandboxee) as plain
dicts, via `to_dict` / `from_dict`, so they never need pickling.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from sandbox import plain

NETWORK_MODES = ("none", "loopback", "allowlist", "host")
SYSCALL_PROFILES = ("default", "strict")
VIOLATION_ACTIONS = ("errno", "kill")
AUDIT_FILES = ("none", "denied", "all")
OPERATIONS = ("read", "write", "create", "delete", "exec")
# filesystem.workdir: "direct" = the rules decide (read-only unless a write rule);
# "copy-on-write" = writable through an overlay, the host's directory untouched.
WORKDIR_MODES = ("direct", "copy-on-write")

MiB = 1024 * 1024


@dataclass(frozen=True)
class FilesystemPolicy:
    """Paths or globs. A directory grants its subtree; `deny` beats every allow.

    `write` implies read, create and delete inside; `exec` implies read.
    """
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    exec: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    tmp_size: int = 64 * MiB     # unset in a policy file: `default_tmp_size` of its memory limit
    # The private /tmp is executable (compile-and-run, venvs, console scripts, C
    # extensions): no noexec on its tmpfs, Landlock EXECUTE beneath it.
    scratch_exec: bool = False
    workdir: str = "direct"          # WORKDIR_MODES
    # Credential stores (sandbox.policy.credentials.STORES, or "*") NOT denied under
    # granted homes; every other store is, once the policy is resolved.
    allow_credentials: tuple[str, ...] = ()
    # ${OUTPUT} is a tmpfs of this size and inode count, copied out after the run:
    # writes beyond it fail with ENOSPC, and the host disk a run fills is bounded.
    output_size: int = 256 * MiB
    output_inodes: int = 16384


TMP_SHARE = 2          # an unset tmp_size is memory / TMP_SHARE
TMP_MIN = 16 * MiB
# The least memory limit a run may have. The sandbox's own processes are charged to
# its memory cgroup (PID 1, a copy of the zygote, and the waiter: ~5.5 MiB on this
# machine), so below this nothing starts: PID 1 died of SIGSEGV or the OOM killer,
# and the run ended as a signal or "no exit status". Docker's floor is 6 MB.
MEMORY_MIN = 8 * MiB


def memory_floor_problem(memory: int | None) -> str | None:
    """Why `memory` (bytes, or None: no limit) cannot be a run's limit, or None."""
    if memory is None or memory >= MEMORY_MIN:
        return None
    return (f"{memory} bytes is below the least a sandbox starts with ({MEMORY_MIN // MiB} MiB: "
            "its own init and PID 1 are charged to the limit too)")


def default_tmp_size(memory: int | None) -> int:
    """The private /tmp's size when the policy does not set one.

    Why it scales: a tmpfs is memory, charged to the sandbox's memory cgroup, so
    a fixed size is either too small for a generous cap (a numpy install does not
    fit in 64 MiB) or a way to reach a tight cap with files. Half the memory limit
    leaves the other half to the programs; no limit keeps the historical 64 MiB.
    """
    if memory is None:
        return 64 * MiB
    return max(TMP_MIN, memory // TMP_SHARE)


@dataclass(frozen=True)
class NetworkPolicy:
    """`unix`: pathname UNIX sockets outside the sandbox it may connect or send to
    (with a private network, mode none, loopback or allowlist; the monitor mediates).

    mode = "allowlist": the sandbox's own network namespace (only `lo`), and a
    proxy served by the monitor that connects to `allow` entries only
    (sandbox.netproxy.rules); `deny_private` refuses non-global addresses unless
    an entry names the address itself; `dns`: a resolver stub answers allowed names.
    The three are ignored by the other modes."""
    mode: str = "none"
    unix: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny_private: bool = True
    dns: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "unix", tuple(self.unix))
        object.__setattr__(self, "allow", tuple(self.allow))


@dataclass(frozen=True)
class Limits:
    """Resource limits. `None` means "no limit of this kind" (core size is always 0).

    cpu and wall are seconds; memory and file_size are bytes.
    """
    cpu: float | None = None
    wall: float | None = None
    memory: int | None = None
    file_size: int | None = None
    processes: int | None = None
    open_files: int | None = None
    # CPU the trusted side (monitor and broker) may spend on this run's requests
    # (issue 11.7); past it the run ends as limit_exceeded, reason "monitor"
    monitor_cpu: float | None = None


@dataclass(frozen=True)
class SyscallPolicy:
    """[syscalls]: the seccomp profile, what it adds and removes, and what a call outside
    it does (errno, or kill)."""
    profile: str = "default"
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    on_violation: str = "errno"


MONITOR_CPU = 120.0      # default monitor_cpu of every policy that does not set it, seconds
AUDIT_RECORDS = 50_000   # default record budget of a run (distinct records stored)


@dataclass(frozen=True)
class AuditPolicy:
    """`records` is the run's record budget: how many distinct records (repeats are
    folded into one with a count) the store keeps for one run. Past it the run goes
    on, its summary says ``truncated`` and counts what was not stored."""
    files: str = "none"
    records: int = AUDIT_RECORDS


@dataclass(frozen=True)
class EnvPolicy:
    """[env]: which of the caller's variables the program keeps, and which are set."""
    keep: tuple[str, ...] = ()
    set: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """One policy file, parsed: what a run may read, write, execute and reach, its
    limits, syscalls, environment and audit (docs/policy-reference.md)."""
    name: str = "unnamed"
    description: str = ""
    best_effort: bool = False
    filesystem: FilesystemPolicy = field(default_factory=FilesystemPolicy)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    limits: Limits = field(default_factory=Limits)
    syscalls: SyscallPolicy = field(default_factory=SyscallPolicy)
    audit: AuditPolicy = field(default_factory=AuditPolicy)
    env: EnvPolicy = field(default_factory=EnvPolicy)
    # Where it came from (file path or built-in name); informational only.
    source: str | None = None
    # What its file extended (already merged in); informational: `policy suggest`
    # writes it back so a learned policy keeps its learning policy's floor. Not part
    # of equality: a flattened policy (`policy show`) is the same policy.
    extends: tuple[str, ...] = field(default=(), compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists), in one walk (`plain.jsonable`): the
        launcher's spec and the monitor host's audit store each make one per run."""
        return plain.jsonable(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Policy":
        """Inverse of `to_dict`. Trusts its input: use the loader for user files."""
        def sub(kind: type, d: Mapping[str, Any] | None) -> Any:
            d = dict(d or {})
            for f in dataclasses.fields(kind):
                if isinstance(d.get(f.name), list):
                    d[f.name] = tuple(d[f.name])
            return kind(**d)
        top = dict(data)
        return cls(
            name=top.get("name", "unnamed"),
            description=top.get("description", ""),
            best_effort=bool(top.get("best_effort", False)),
            filesystem=sub(FilesystemPolicy, top.get("filesystem")),
            network=sub(NetworkPolicy, top.get("network")),
            limits=sub(Limits, top.get("limits")),
            syscalls=sub(SyscallPolicy, top.get("syscalls")),
            audit=sub(AuditPolicy, top.get("audit")),
            env=EnvPolicy(keep=tuple((top.get("env") or {}).get("keep", ())),
                          set=dict((top.get("env") or {}).get("set", {}))),
            source=top.get("source"),
            extends=tuple(top.get("extends") or ()),
        )

    def replace(self, **changes: Any) -> "Policy":
        return dataclasses.replace(self, **changes)
