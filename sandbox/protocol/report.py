"""The exit report: what the monitor tells the launcher once the sandbox is gone.

Most of it is shaped by the child (denied paths, error texts, counts, the audit's
summary), so each part has a fixed, bounded shape (sandbox.protocol.bounds) and the
whole has a static size bound below the control stream's frame limit."""
from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.protocol.bounds import bound

__all__ = ['SetupFailure', 'ExecFailure', 'Violation', 'OpCounts', 'Denied',
           'NetSummary', 'AuditSummary', 'OutputSummary', 'ExitReport']


# -- the messages ----------------------------------------------------------------
@dataclass
class SetupFailure:
    """A layer that could not be applied, and why: the run failed closed before the
    program ran (RunResult.setup_error)."""
    layer: str = bound(chars=64, default="")
    message: str = bound(chars=4096, default="")


@dataclass
class ExecFailure:
    """Why PID 2 could not exec the program (the launcher explains it: exec_failure.py)."""
    program: str = bound(chars=4096, default="")   # argv[0] as given
    path: str = bound(chars=4096, default="")      # what was executed, after the PATH search
    errno: int = 0
    searched: bool = False                         # a bare name the PATH search did not find


@dataclass
class Violation:
    """A seccomp violation the monitor saw (kill mode)."""
    kind: str = bound(chars=32, default="seccomp")
    syscall: str = bound(chars=64, default="")
    nr: int = -1
    args: list[int] = bound(items=6, default_factory=list)
    pid: int = 0


@dataclass
class OpCounts:
    """Allowed and denied file operations of one kind, for the audit's summary."""
    allowed: int = 0
    denied: int = 0


@dataclass
class Denied:
    """One denied file operation, as listed in RunResult.denied."""
    seq: int = 0
    pid: int = 0
    operation: str = bound(chars=32, default="")
    syscall: str = bound(chars=64, default="")
    path: str = bound(chars=4096, default="")
    rule: str = bound(chars=1024, default="")
    path_hex: str | None = bound(chars=8192, default=None)   # the exact bytes, when not UTF-8


@dataclass
class NetSummary:
    """RunResult.audit.network: the connections of a mode = "allowlist" run (the monitor's
    proxy, sandbox/netproxy); every attempt is a record in the store."""
    connections: int = 0
    allowed: int = 0
    denied: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    targets: list[tuple[str, int]] = bound(chars=300, items=10, default_factory=list)
    denied_targets: list[str] = bound(chars=300, items=10, default_factory=list)
    dns_queries: int = 0      # questions to the DNS stub (dns = true)


@dataclass
class AuditSummary:
    """RunResult.audit (docs/audit.md); the store holds every record."""
    files: str = bound(chars=16, default="")
    checked: int = 0
    records: int = 0
    by_operation: dict[str, OpCounts] = bound(chars=32, items=32, default_factory=dict)
    by_verdict: OpCounts = field(default_factory=OpCounts)
    top_paths: list[tuple[str, int]] = bound(chars=4096, items=10, default_factory=list)
    denied_count: int = 0
    denied_listed: int = 0
    monitor_denied: int = 0
    brokered: int = 0
    errors: int = 0
    vanished: int = 0   # callers gone before their paths were read to the end
    errors_sample: list[str] | None = bound(chars=512, items=5, default=None)
    run_id: str = bound(chars=128, default="")
    db: str = bound(chars=4096, default="")
    sync_wakeup: bool = False
    fast_answered: int = 0    # calls answered by the compiled loop (monitor/notify_fast.py)
    guarded: list[str] = bound(chars=4096, items=16, default_factory=list)
    broker_pid: int | None = None         # the broker process that acted for the sandbox
    broker_error: str | None = bound(chars=1024, default=None)   # why it could not
    db_error: str | None = bound(chars=1024, default=None)
    dropped: int = 0          # events lost (store failure); with db_error saying why
    stored: int = 0           # rows in the store (repeats folded into one with a count)
    stored_events: int = 0    # events in those rows: records == stored_events + not_stored + dropped
    truncated: bool = False   # the record budget was hit (the run went on)
    not_stored: int = 0       # events past the budget
    budget: int = 0           # the run's [audit] records
    queue_peak: int = 0       # the largest backlog of events waiting for the store
    network: NetSummary | None = None   # mode = "allowlist": the proxy's connections


@dataclass
class OutputSummary:
    """RunResult.output: what the copy-out of ${OUTPUT} handed back (monitor/copy_out.py)."""
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    setid_stripped: int = 0          # files and dirs whose setuid/setgid/sticky bits went
    dropped: int = 0                 # names not handed back, by reason in dropped_by
    dropped_by: dict[str, int] = bound(chars=32, items=16, default_factory=dict)
    error: str | None = bound(chars=1024, default=None)   # the copy stopped early


@dataclass(slots=True)
class ExitReport:
    """What the monitor tells the launcher once the sandbox is gone.

    `status` is PID 1's raw wait status, -1 when there is none. The fields
    `monitor_lost`, `monitor_killed`, `killed_after_grace`, `bad_report` and
    `monitor_exit` are set only by the launcher, when no valid report arrived;
    `monitor_error` by a monitor that failed but could still report.
    """
    status: int = -1
    timed_out: bool = False
    cancelled: bool = False
    setup_error: SetupFailure | None = None
    exec_error: str | None = bound(chars=4096, default=None)
    exec_failure: ExecFailure | None = None
    init_status: int = -1   # the init's own wait status, when `status` is the program's
    layers: list[str] = bound(chars=64, items=32, default_factory=list)
    skipped: dict[str, str] = bound(chars=1024, items=32, default_factory=dict)
    violation: Violation | None = None
    limits_applied: dict[str, str] = bound(chars=64, items=16, default_factory=dict)
    oom_killed: bool = False
    tmp_full: bool = False          # the private /tmp had (almost) no space left at the end
    shm_full: bool = False          # ... and the private /dev/shm
    # errno mode: syscalls the filter refused, by name (where the monitor saw them)
    denied_syscalls: dict[str, int] = bound(chars=64, items=16, default_factory=dict)
    pids_limit_hit: bool = False
    cpu_limit_hit: bool = False     # the monitor ended the tree at the sandbox's CPU budget
    monitor_limit_hit: bool = False  # ... at the trusted side's budget (limits.monitor_cpu)
    monitor_cpu: float = 0.0        # seconds the monitor and its broker spent on this run
    monitor_peak_memory: int = 0    # bytes, the run's own: broker peak RSS + its audit backlog
    max_tasks: int = 0
    prestarted: bool = False
    pooled: bool = False       # ... and that stub came from the run's warm pool
    view_prebuilt: bool = False   # ... whose PID 1 had the policy's view built (prebuilt.py)
    wall_time: float = 0.0
    cpu_time: float = 0.0
    max_rss: int = 0
    pids: dict[str, int] = bound(chars=32, items=8, default_factory=dict)
    timings: dict[str, float] = bound(chars=64, items=64, default_factory=dict)
    audit: AuditSummary | None = None
    output: OutputSummary | None = None
    workdir: OutputSummary | None = None   # the copy-on-write layer's export (workdir_export)
    workdir_full: bool = False      # ... which had (almost) no space or inodes left at the end
    denied: list[Denied] = bound(items=1000, budget=1 << 20, default_factory=list)
    monitor_lost: bool = False
    monitor_killed: bool = False
    killed_after_grace: bool = False
    bad_report: str | None = bound(chars=512, default=None)
    monitor_exit: int | None = None   # the monitor's exit code (negative: signal), when lost
    monitor_error: str | None = bound(chars=1024, default=None)   # the monitor's own failure
    # a write to the caller's stdout or stderr that failed (ENOSPC, EIO; not a reader
    # that left): the program's output was cut there (StdioRelay.write_error)
    output_error: str | None = bound(chars=256, default=None)
    clipped: dict[str, int] = bound(chars=128, items=64, default_factory=dict)
