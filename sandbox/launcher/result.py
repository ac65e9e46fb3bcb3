"""RunResult: everything a caller learns about one sandboxed run.

Modelled on Sandbox2's Result (status + reason + detail) and isolate's meta
file (times, memory, exit code or signal). Always JSON-serialisable via
`to_dict()`; the schema is documented in docs/run-result.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sandbox import plain

class Status(StrEnum):
    """How a run ended. A StrEnum: members are equal to their strings ("ok"), and
    JSON holds the plain string."""
    OK = "ok"                          # finished; exit code 0 (program) or workflow completed/bailed
    ERROR = "error"                    # non-zero exit, an action raised, or the child broke off
    TIMEOUT = "timeout"                # wall-clock limit hit; the whole tree was killed
    LIMIT_EXCEEDED = "limit_exceeded"  # cpu, memory, processes or file size (see `reason`)
    SIGNALED = "signaled"              # killed by a signal it did not ask for
    VIOLATION = "violation"            # seccomp violation (kill mode) or an IPC protocol violation
    SETUP_ERROR = "setup_error"        # a containment layer could not be applied; nothing ran
    CANCELLED = "cancelled"            # the caller cancelled it (handle.cancel(), fail-fast, close())


OK, ERROR, TIMEOUT = Status.OK, Status.ERROR, Status.TIMEOUT
LIMIT_EXCEEDED, SIGNALED, VIOLATION = Status.LIMIT_EXCEEDED, Status.SIGNALED, Status.VIOLATION
SETUP_ERROR, CANCELLED = Status.SETUP_ERROR, Status.CANCELLED
STATUSES = tuple(Status)


@dataclass
class RunResult:
    run_id: str
    status: Status = Status.ERROR
    reason: str = ""                      # human-readable why, for every non-ok status
    exit_code: int | None = None
    signal: int | None = None
    wall_time: float = 0.0                # seconds, launcher-measured
    cpu_time: float = 0.0                 # seconds, user+system of the whole tree
    monitor_cpu: float = 0.0              # seconds the trusted side (monitor, broker) spent
    monitor_peak_memory: int = 0          # bytes, the run's own: broker peak RSS + audit backlog
    max_rss: int = 0                      # bytes, the largest process of the tree
    store: dict[str, Any] = field(default_factory=dict)
    changed_keys: list[str] = field(default_factory=list)
    deleted_keys: list[str] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None   # {type, message, traceback, stage, action}
    bailed: bool = False
    bail_reason: str | None = None
    violation: dict[str, Any] | None = None   # {kind, syscall, ...} or {kind: "ipc", ...}
    layers: list[str] = field(default_factory=list)          # applied, in order
    skipped_layers: dict[str, str] = field(default_factory=dict)  # best_effort only
    limits_applied: dict[str, str] = field(default_factory=dict)  # e.g. memory -> cgroup-v1
    policy: str | None = None
    output_dir: str | None = None
    output: dict[str, Any] | None = None  # the copy-out: files, bytes, dropped (fifos, devices...)
    stdout: str | None = None             # only when captured
    stderr: str | None = None
    handler_errors: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, int] = field(default_factory=dict)   # count per message type
    audit: dict[str, Any] | None = None   # summary, when auditing
    denied: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] | None = None   # set by middleware (e.g. Metrics, HmacAuth)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # frames inbound middleware refused
    nested: list[dict[str, Any]] = field(default_factory=list)    # spawns served for this run's actions
    pids: dict[str, int] = field(default_factory=dict)   # host pids: monitor, its parent, sandboxee
    warm: bool = False   # its cgroups and namespaces were made before the request (a spare)
    pooled: bool = False  # ... and taken from its policy's warm pool, limits already written
    view_prebuilt: bool = False   # ... with the policy's part of its view already mounted
    timings: dict[str, float] = field(default_factory=dict)  # setup breakdown, ms (docs/benchmarks-journal.md)
    clipped: dict[str, int] = field(default_factory=dict)  # monitor report parts cut to bound
    # filesystem.workdir = "copy-on-write": ${OUTPUT}/workdir.changes, None if nothing changed
    workdir_changes: str | None = None
    # on_violation = "errno": syscalls refused with EPERM, by name, with their counts (where
    # the run has a seccomp listener: an audit or a private network; else not known)
    denied_syscalls: dict[str, int] = field(default_factory=dict)
    # One line each where the sandbox is why something failed: the path, the rule,
    # and the policy key to change (sandbox.launcher.hints); `sandbox exec` prints them.
    hints: list[str] = field(default_factory=list)
    # A write to the caller's stdout or stderr failed (ENOSPC on /dev/full, EIO), not a
    # reader that left: the output was cut there, and a run the program ended well (or
    # by the SIGPIPE that cut brought) is an error, exit 1, as its own write would be.
    output_error: str | None = None

    def __post_init__(self) -> None:
        self.status = Status(self.status)   # a plain "ok" from older callers becomes Status.OK

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return plain.asdict(self)   # = dataclasses.asdict, cheaper (sandbox.plain)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)
