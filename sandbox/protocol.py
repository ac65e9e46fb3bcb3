"""The typed internal protocol between the monitor and the launcher.

Both sides are trusted code, but what they exchange is shaped by the child:
denied paths, error texts, counts. So each message here is a dataclass with a
*fixed, bounded shape*: every string has a maximum length, every list and
dict a maximum number of items (and, where the items are large, a byte
budget). One codec turns a message into JSON and back:

- `encode` never fails on a well-typed message and never exceeds
  `max_size(cls)`: what does not fit is clipped, and each clipping is counted
  in the message's ``clipped`` field (dotted field path -> items or characters
  dropped), so a truncation is visible, never silent.
- `decode` accepts exactly the shape: unknown or missing fields, a wrong
  type, a string or list over its bound, a non-finite number all raise
  ProtocolError. The launcher turns that into an honest error result.

Issue 14's one typed internal protocol: every message between the
launcher, the fork server, the monitor, the stub and PID 1 is one of the
dataclasses below, named in `MESSAGES`. On the wire a message is its
envelope ``{"type": NAME, "payload": {...}}``: one datagram on a
SOCK_SEQPACKET socket (`send`/`recv`, descriptors beside it with
SCM_RIGHTS), or one length-prefixed frame (sandbox.ipc.frames) on the
launcher's control stream (`to_frame`/`parse`). A receiver names the types it
accepts at that point; anything else, or a message not exactly of its shape,
is a ProtocolError. To add a field, add it to the dataclass with a default
and, for strings and containers, its bound (`bound(...)`); `max_size` and
the tests follow. To add a message, add its dataclass to `MESSAGES`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, Union

from sandbox.errors import ProtocolError as ProtocolError
from sandbox.ipc.frames import dumps, encode as _frame, json_bytes, parse_json
from sandbox.jsontypes import JSONObject

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")

INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
DEFAULT_CHARS = 256
DEFAULT_ITEMS = 64
EXIT_REPORT_MAX = 4 << 20   # bytes: the exit frame's limit on both ends (max_size is below)
SPEC_MAX = 4 << 20          # bytes: the spec's policy, plan and environment together
# The longest string execve accepts (32 pages, "NAME=VALUE" and its NUL): an environment
# value's bound is the kernel's, not a smaller one of ours (a new-user probe: 100000
# characters were refused as "env{}: over its 65536", directly they run)
MAX_ARG_STRLEN = 32 * 4096
# One SOCK_SEQPACKET datagram must fit the sender's socket buffer (net.core.wmem_default,
# ~208 KiB unprivileged): the largest datagram any sender here makes. A spec over it
# cannot go to a spare's stub in one datagram and takes the cold path (monitor/spare.py).
DATAGRAM_MAX = 150_000
MAX_FDS = 8                 # descriptors beside one datagram
TYPED_AHEAD = 1024          # bytes of a terminal's typed-ahead lines a `-t` run takes

# Plain JSON (a policy or a plan as its own to_dict makes it): any JSON object whose
# encoding fits the field's `budget` bytes; parsed by the strict JSON reader.
Json = dict[str, Any]


def _is_json(tp: Any) -> bool:
    return typing.get_origin(tp) is dict and typing.get_args(tp)[1] is Any


def bound(*, chars: int = DEFAULT_CHARS, items: int = DEFAULT_ITEMS,
          budget: int | None = None, default: Any = dataclasses.MISSING,
          default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with bounds. `chars` applies to every string of the field
    (dict keys and tuple members included, not inside a nested dataclass),
    `items` to every list and dict of it, `budget` (bytes) to the JSON of a
    top-level list of the field: items past it are dropped."""
    meta = {"chars": chars, "items": items, "budget": budget}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


class Bounds(typing.NamedTuple):
    """A field's bounds, as `bound` declared them."""
    chars: int
    items: int
    budget: int | None


def bounds_of(cls: type, name: str) -> Bounds:
    """The bounds (`bound`) declared for field `name` of message `cls`: for the
    fixed-form writers and fit checks that skip the codec but must hold its limits."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    return Bounds(int(meta.get("chars", DEFAULT_CHARS)), int(meta.get("items", DEFAULT_ITEMS)),
                  meta.get("budget"))


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


@dataclass
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


# -- launcher <-> monitor (control stream) -------------------------------------------
@dataclass
class RunPathsWire:
    """The run's host directories, made by the launcher: its run directory, its work
    directory, its ${OUTPUT} and its private /tmp."""
    rundir: str = bound(chars=4096, default="")
    workdir: str = bound(chars=4096, default="")
    output: str = bound(chars=4096, default="")
    tmp: str = bound(chars=4096, default="")


@dataclass
class WinSize:
    """The caller's terminal size, for the run's pty (at the start and on SIGWINCH)."""
    rows: int = 24
    cols: int = 80


@dataclass
class StdioWire:
    """Which of stdin, stdout, stderr the monitor relays (sandbox.monitor.stdio), and the
    caller's terminal size when the run has a pty."""
    relay: list[bool] = bound(items=3, default_factory=lambda: [True, True, True])
    tty: WinSize | None = None
    # keys the caller's terminal held as whole lines (and end-of-input) when `-t` made
    # it raw, hex: typed into the program's pty first (sandbox.launcher.signals.RawTerminal)
    ahead: str = bound(chars=2 * TYPED_AHEAD, default="")


@dataclass
class CallerWire:
    """What a directly exec'd program inherits from its caller besides stdio, cwd and
    environment (sandbox.launcher.caller_state): on the cold path the monitor inherits it
    too, but a warm run's monitor and sandbox are forks of the daemon's, so the caller's
    (the thin client's) travels here and PID 1 applies it (sandbox.sandboxee.inherit).
    Signal sets are the kernel's, bit N-1 for signal N. None: leave it as it is."""
    sig_ignored: int = 0     # SIG_IGN survives execve: nohup, `trap '' HUP`
    sig_blocked: int = 0     # the signal mask survives execve too
    umask: int | None = None
    nice: int | None = None
    ioprio: int | None = None            # ioprio_get's value: class << 13 | level
    oom_score_adj: int | None = None
    rlimits: dict[str, int] = bound(chars=32, items=32, default_factory=dict)   # soft, -1: none
    closed_std: int = 0      # bit N: the caller's descriptor N (0, 1, 2) was closed


@dataclass
class PolicySource:
    """A file (or search directory) the run's policy was read from, as the launcher's
    loader saw it (sandbox.policy.sources.SourceFile): a warm pool kept for that
    policy is dropped when one changes (sandbox.monitor.pools)."""
    path: str = bound(chars=4096, default="")
    sha256: str = bound(chars=64, default="")
    ino: int = 0
    dev: int = 0
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    is_dir: bool = False


# At most this many (an `extends` chain of hundreds of files): a policy read from more
# is sent without them, and pooled by its content alone (sandbox.monitor.pool_key)
POLICY_SOURCES_MAX = 256


@dataclass
class Spec:
    """The run, from the launcher to the monitor (and, on the spare path, on to its stub)."""
    run_id: str = bound(chars=128, default="")
    mode: str = bound(chars=16, default="exec")          # exec | workflow
    argv: list[str] | None = bound(chars=1 << 17, items=1 << 18, default=None)   # ~ARG_MAX
    env: dict[str, str] = bound(chars=MAX_ARG_STRLEN, items=1024, default_factory=dict)
    policy: Json = bound(budget=1 << 20, default_factory=dict)
    fs_plan: Json = bound(budget=2 << 20, default_factory=dict)
    paths: RunPathsWire = field(default_factory=RunPathsWire)
    ipc_fd: int = -1
    audit_db: str = bound(chars=4096, default="")
    audit_max_bytes: int | None = None
    init_path: str | None = bound(chars=4096, default=None)
    clock: dict[str, float] = bound(chars=64, items=16, default_factory=dict)
    stdio: StdioWire = field(default_factory=StdioWire)
    caller: CallerWire = field(default_factory=CallerWire)
    namespaces: bool = True
    # what the policy was read from (empty: a policy given as an object)
    policy_sources: list[PolicySource] = bound(items=POLICY_SOURCES_MAX,
                                               default_factory=list)


@dataclass
class Pid1Start:
    """What the monitor hands a waiting PID 1 with the run's descriptors (ipc, stdin,
    stdout, stderr, exit pipe): the run's containment context, built by the monitor
    host from the `Spec` it decoded, with the mount table it computed, and the spec's
    fields PID 1 reads besides (sandbox.monitor.runspec.pid1_start). Not a message of
    `MESSAGES`: it goes from the monitor to its own fork of the same code before
    anything untrusted runs, as `marshal` of its fields (`start_to_bytes`), and
    `context` is pickled, taken back by the C unpickler. Why: PID 1 is a fresh fork
    of the template, where decoding the spec's JSON and running the policy's
    constructors again wrote ~330 of the template's pages (1.5-2.8 ms a run,
    docs/benchmarks-journal.md); the C unpickler builds the same objects in a third of that."""
    mode: str = "exec"         # the spec's: a Python action's PID 1 leaves `context` to
                               # its setup child (sandbox/sandboxee/planned.py); "view":
                               # no run yet, a pooled view to build (runspec.view_start)
    in_memfd: bool = False     # over one datagram: `context` is the sealed memfd beside it
    context: bytes = b""       # pickle of (Spec without policy and plan, ContainContext)


_START_TAG = "pid1-start"


def start_to_bytes(start: Pid1Start) -> bytes:
    return _marshalled((_START_TAG, start.mode, start.in_memfd, start.context), DATAGRAM_MAX,
                       "pid1 start")


def start_from_bytes(data: bytes) -> Pid1Start:
    """`start_to_bytes`'s start back; ProtocolError when it is not one."""
    got = _unmarshalled(data, DATAGRAM_MAX, "pid1 start")
    if (type(got) is not tuple or len(got) != 4 or got[0] != _START_TAG
            or type(got[1]) is not str or type(got[2]) is not bool or type(got[3]) is not bytes):
        raise ProtocolError("pid1 start: not one")
    return Pid1Start(got[1], got[2], got[3])


def _marshalled(values: tuple[Any, ...], limit: int, what: str) -> bytes:
    import marshal
    data = marshal.dumps(values)
    if len(data) > limit:
        raise ProtocolError(f"{what}: {len(data)} bytes, over {limit}")
    return data


def _unmarshalled(data: bytes, limit: int, what: str) -> Any:
    import marshal
    if len(data) > limit:
        raise ProtocolError(f"{what}: {len(data)} bytes, over {limit}")
    try:
        return marshal.loads(data)
    except (ValueError, EOFError, TypeError) as exc:
        raise ProtocolError(f"{what}: {exc}") from None


# At most this many bytes: the setup child's answer to a Python action's PID 1 (`Pid1Plan`)
PLAN_MAX = 1 << 18


@dataclass
class Pid1Plan:
    """What a Python action's PID 1 still needs once its setup child has decoded the
    `Spec`, built the context and applied the namespace-wide layers
    (sandbox/sandboxee/planned.py): the environment, and the containment context for
    the per-process layers, without what only the child needed (the filesystem
    rules and plan, the mount table, the syscall lists once the seccomp program is
    compiled). Not a message of `MESSAGES`: it goes from a fork of PID 1 to PID 1,
    before anything untrusted runs, as `marshal` of its fields (`plan_to_bytes`), at
    most PLAN_MAX bytes, and `context` is a pickled `ContainContext`, taken back by the
    C unpickler: PID 1 decodes no JSON and runs no policy constructor, each page of
    whose Python would be the program's own (docs/benchmarks-journal.md)."""
    # (layer, text) of a SetupError (or of a spec that did not decode: layer "stub")
    error: list[str] | None = bound(chars=4096, items=2, default=None)
    env: dict[str, str] = bound(chars=MAX_ARG_STRLEN, items=1100, default_factory=dict)
    stdio_tty: bool = False   # the run has a terminal (the program takes it)
    # the descriptors beside the plan: which ContainContext field each one is
    fds: list[str] = bound(chars=32, items=8, default_factory=list)
    context: bytes = b""      # pickle of the ContainContext (above); b"" with an error
    # what PID 1's layers read of the policy (sandbox.sandboxee.planned.policy_key): the
    # context's own is None, PID 1 takes the template's policy of this key
    policy_key: list[Any] = bound(chars=64, items=4096, default_factory=list)


def plan_to_bytes(plan: Pid1Plan) -> bytes:
    """`plan` as marshal of its fields, in their order (Pid1Plan's docstring)."""
    return _marshalled(tuple(getattr(plan, f.name) for f in dataclasses.fields(plan)),
                       PLAN_MAX, "pid1 plan")


def plan_from_bytes(data: bytes) -> Pid1Plan:
    """`plan_to_bytes`'s plan back; ProtocolError when it is not one."""
    got = _unmarshalled(data, PLAN_MAX, "pid1 plan")
    try:
        return Pid1Plan(*got)
    except TypeError as exc:
        raise ProtocolError(f"pid1 plan: {exc}") from None


@dataclass
class Cancel:
    """The launcher gives up on the run (its caller cancelled it): end it now."""
    reason: str = bound(chars=256, default="cancelled")


@dataclass
class Signal:
    """A signal the caller got, for the program (relayed by the init). `hold_input`, with
    SIGCONT: the job was continued in the background (`bg`), so the caller's terminal
    input stays held (sandbox.monitor.stdio_hub.StdioHub.hold) until a SIGCONT without it."""
    signal: int = 0
    hold_input: bool = False


# -- launcher <-> fork server <-> spare (datagrams) -----------------------------------
@dataclass
class SpawnRequest:
    """Start a monitor for one run; beside it: ipc, control, stdin, stdout, stderr (the
    monitor's) and, from the launcher to the fork server only, the run's exit socket."""


@dataclass
class Spawned:
    """The run is taken by the monitor host (`pid`: the host's); no descriptor beside it.
    The run's end comes as `MonitorExited` on its exit socket."""
    pid: int = 0


@dataclass
class MonitorExited:
    """The end of one run's supervision, on the run's exit socket, as a raw wait status
    whose exit code is one of sandbox.monitor.main.EXIT_* (whether the report went
    out); the socket's end of stream without it means the monitor host itself died."""
    status: int = -1


@dataclass
class Refused:
    """The request could not be served (the launcher reports it as a setup error)."""
    error: str = bound(chars=1024, default="")


# -- monitor host <-> zygote ------------------------------------------------------------
@dataclass
class ForkStub:
    """Fork a stub (sandbox.monitor.zygote); beside it: the stub's ends of its status,
    setup and go sockets. The stub joins the cgroups whose `cgroup.procs` files are
    named, unshares the namespaces (every one, the network's only when `network`;
    none when not `namespaces`), says `StubReady` and waits for the run."""
    namespaces: bool = True
    network: bool = True
    cgroup_procs: list[str] = bound(chars=4096, items=16, default_factory=list)


@dataclass
class Forked:
    """The stub is forked; beside it: its pidfd (opened by its parent, the zygote, before
    it could be reaped: never a recycled pid)."""
    pid: int = 0


# -- a pooled PID 1 -> monitor (setup socket) -----------------------------------------
@dataclass
class ViewReady:
    """A PID 1 pooled at the "view" level (sandbox/isolation/prebuilt.py), once it built the
    policy's part of its view before any run: ok, with the device and inode of each
    bound source and each masked object as it was mounted on (the host serves the
    sandbox only while the paths still lead there), or why not (it then ends)."""
    ok: bool = False
    why: str = bound(chars=1024, default="")
    sources: list[tuple[str, int, int]] = bound(chars=4096, items=1024, budget=100_000,
                                                default_factory=list)
    # each directory listed for its Landlock rules made ahead (prebuilt.py): path,
    # device, inode, mtime and ctime (ns) as listed
    dirs: list[tuple[str, int, int, int, int]] = bound(chars=4096, items=256, budget=50_000,
                                                       default_factory=list)


# -- stub -> monitor (status socket) ------------------------------------------------
@dataclass
class StubReady:
    """A stub: its namespaces are entered and PID 1 is forked, waiting for the spec (ok,
    `pid1`: PID 1 in the monitor's PID namespace), or why not (`layer`: the
    SetupError's)."""
    ok: bool = False
    why: str = bound(chars=1024, default="")
    layer: str = bound(chars=64, default="")
    pid1: int = 0


@dataclass
class Pid1Exited:
    """PID 1's end, from the stub (the compiled ``sandbox-init --stub``, or the Python
    stub): its raw wait status, and the resource usage of this run alone: wait4's of
    PID 1 (which reaps its whole tree, but for what the kernel kills and reaps
    uncharged when a PID namespace's init exits: the CPU meter, cpu_budget.py, covers
    that) plus, without a PID namespace, of every orphan the stub reaped as the
    run's subreaper. Per run, never the monitor's process-wide RUSAGE_CHILDREN.
    The compiled stub writes it itself (init.c `stub`), from a MSG_MAX-byte buffer."""
    status: int = -1    # PID 1's raw wait status
    utime_us: int = 0   # user CPU, microseconds
    stime_us: int = 0   # system CPU, microseconds
    max_rss_kib: int = 0   # the largest peak resident set of one process, KiB (ru_maxrss)


# -- the init -> monitor (exit pipe) -----------------------------------------------
@dataclass
class ProgramExited:
    """The program's (PID 2's) raw wait status, which the init's own exit code cannot
    carry (it says 128+N for "killed by signal N" and for "exit(128+N)" alike). The
    compiled init writes it once, as one envelope in one write(2) of at most
    `envelope_max` bytes, on its non-blocking exit pipe; the monitor believes it only
    when it agrees with the init's exit code (supervisor.py `_program_status`)."""
    status: int = -1


@dataclass
class ProgramStopped:
    """The program (PID 2) stopped at its pty (^Z, or a stop signal): from the compiled
    init on the setup socket, then from the monitor to the launcher, which stops the
    caller's job as a terminal's ^Z would (sandbox.launcher.signals.Forwarder)."""
    signal: int = 0


# -- PID 1 <-> monitor (setup socket) -----------------------------------------------
@dataclass
class ListenerAt:
    """PID 1's seccomp listener is its descriptor `fd`: the monitor takes it (pidfd_getfd)."""
    fd: int = -1


@dataclass
class Ack:
    """Whether the monitor took PID 1's notification listener (pidfd_getfd): PID 1 goes
    on only then; otherwise the run fails closed at the seccomp layer."""
    ok: bool = False


@dataclass
class OutputFd:
    """Beside it: a descriptor of the run's ${OUTPUT} tmpfs, for the copy-out."""


@dataclass
class ShmFd:
    """Beside it: an O_PATH descriptor of the private /dev/shm, for its free space at the end."""


@dataclass
class CowFd:
    """Beside it: a descriptor of the copy-on-write work directory's layer tmpfs (export)."""


@dataclass
class ScratchFd:
    """Beside it: an O_PATH descriptor of the private /tmp, for its free space at the end."""


@dataclass
class ProxyFds:
    """Beside it: the allowlist proxy's listening socket at 127.0.0.1:3128 in the sandbox's
    network namespace and, with `dns`, the DNS stub's UDP socket (sandbox/netproxy)."""
    dns: bool = False


@dataclass
class Ready:
    """PID 1 applied every layer: which are active, which a best-effort policy skipped
    and why, and each layer's time."""
    active: list[str] = bound(chars=64, items=32, default_factory=list)
    skipped: dict[str, str] = bound(chars=512, items=16, default_factory=dict)
    timings: dict[str, float] = bound(chars=64, items=32, default_factory=dict)


@dataclass
class ExecError:
    """PID 2 could not exec the program: why, for the launcher to explain."""
    failure: ExecFailure = field(default_factory=ExecFailure)
    message: str = bound(chars=4096, default="")   # empty: the monitor words it (below)


def exec_message(failure: ExecFailure) -> str:
    """What an exec failure says, as the shell would: the program, then the errno's text
    (the compiled init's PID 2 sends only the errno: sandboxee/entry.py)."""
    return f"{failure.program}: {os.strerror(failure.errno)}"[:4096]


MESSAGES: dict[str, type] = {
    "spec": Spec, "cancel": Cancel, "signal": Signal, "winsize": WinSize, "exit": ExitReport,
    "spawn": SpawnRequest, "spawned": Spawned, "refused": Refused,
    "monitor_exit": MonitorExited,
    "fork_stub": ForkStub, "forked": Forked,
    "stub_ready": StubReady, "view_ready": ViewReady, "pid1_exit": Pid1Exited,
    "program_exit": ProgramExited, "program_stopped": ProgramStopped,
    "listener": ListenerAt, "ack": Ack, "output": OutputFd, "cow": CowFd, "shm": ShmFd,
    "scratch": ScratchFd, "proxy": ProxyFds,
    "ready": Ready, "setup_error": SetupFailure, "exec_error": ExecError,
}
NAMES: dict[type, str] = {cls: name for name, cls in MESSAGES.items()}


# -- the codec ---------------------------------------------------------------------
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a message class, resolved once per class: resolving
    evaluates every annotation string each time (a few ms per run, on every decode).
    Every message's are resolved before the template is forked (`resolve_all`), so
    that a process forked from it resolves none: each resolution builds ForwardRefs and walks
    typing's caches, and in a fork every object it touches copies a page of the
    template (issue 14: ~0.2 MiB per spare stub decoding its Spec)."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


# What the codec asks of a type, asked once per type (typing.get_origin, get_args,
# dataclasses.is_dataclass, the Optional unwrapping) and of a message class once per class
# (its fields, their hints and bounds): every message of every run walked typing's
# introspection for each value it held, about a third of the monitor host's CPU per run.
# Filled for every message before the template is forked (`resolve_all`), so its forks
# share them and fill nothing.
_DC, _JSON, _BOOL, _INT, _FLOAT, _STR, _LIST, _TUPLE, _DICT, _OTHER = range(10)
_KINDS: dict[Any, tuple[Any, bool, int, tuple[Any, ...]]] = {}
_FIELDS: dict[type, tuple[tuple[str, Any, dict[str, Any]], ...]] = {}


def _kind(tp: Any) -> tuple[Any, bool, int, tuple[Any, ...]]:
    """(the type without Optional, whether it was Optional, its kind, its type arguments)."""
    got = _KINDS.get(tp)
    if got is not None:
        return got
    base, optional = _unwrap_optional(tp)
    origin, args = typing.get_origin(base), typing.get_args(base)
    kind = (_DC if dataclasses.is_dataclass(base) else _JSON if _is_json(base)
            else _BOOL if base is bool else _INT if base is int else _FLOAT if base is float
            else _STR if base is str else _LIST if origin is list
            else _TUPLE if origin is tuple else _DICT if origin is dict else _OTHER)
    got = _KINDS[tp] = (base, optional, kind, args)
    return got


def _fields(cls: type) -> tuple[tuple[str, Any, dict[str, Any]], ...]:
    """A message class's (name, resolved type, bounds) per field, in order."""
    got = _FIELDS.get(cls)
    if got is None:
        hints = _hints(cls)
        got = _FIELDS[cls] = tuple((f.name, hints[f.name], dict(f.metadata))
                                   for f in dataclasses.fields(cls))
        _WITH_KINDS[cls] = tuple((name, hint, meta, _kind(hint)[2])
                                 for name, hint, meta in got)
    return got


_WITH_KINDS: dict[type, tuple[tuple[str, Any, dict[str, Any], int], ...]] = {}


def _with_kinds(cls: type) -> tuple[tuple[str, Any, dict[str, Any], int], ...]:
    """`_fields(cls)` with each field's kind (`_kind`) as a fourth item, made once per
    class with the fields: the codec's loops over a message's fields ask nothing per
    field."""
    got = _WITH_KINDS.get(cls)
    if got is None:
        _fields(cls)
        got = _WITH_KINDS[cls]
    return got


def _plain(kind: int, x: Any, meta: dict[str, Any]) -> bool:
    """Whether `_Enc.value` returns `x` itself, unchecked and unclipped, for a field of
    this kind: an ASCII string within its bound, a bool, an int within 64 bits (exact
    types: a subclass takes the full path). Asked inline for each field of a message,
    it spares most of a spec's values (the mount table's steps and pairs) the call,
    the `where` string and the kind's branches: the launcher encodes each run's spec,
    and the monitor host encodes it again for the stub."""
    t = type(x)
    if t is str:
        return kind == _STR and x.isascii() and len(x) <= meta.get("chars", DEFAULT_CHARS)
    if t is bool:
        return kind == _BOOL
    return t is int and kind == _INT and INT_MIN <= x <= INT_MAX


class _Enc:
    """Turns a message into JSON-ready values, clipping to the bounds."""

    def __init__(self, clip: bool = True) -> None:
        self.clipped: dict[str, int] = {}
        self.may_clip = clip

    def clip(self, where: str, n: int, what: str) -> None:
        """Count `n` units cut from `where`; or, for a message that is never cut,
        refuse it, saying `what` is over which bound."""
        if not self.may_clip:
            raise ProtocolError(f"{where}: {what} (refused whole, never cut short)")
        self.clipped[where] = self.clipped.get(where, 0) + n

    def value(self, tp: Any, v: Any, meta: dict[str, Any], where: str) -> Any:
        tp, optional, kind, args = _kind(tp)
        if v is None:
            if optional:
                return None
            raise ProtocolError(f"{where}: None where {tp} is required")
        if kind == _DC:
            return self.obj(tp, v, where)
        if kind == _JSON:
            if not isinstance(v, dict):
                raise ProtocolError(f"{where}: want a JSON object")
            try:
                n = len(json_bytes(v))
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"{where}: not JSON: {exc}") from None
            if n > meta["budget"]:
                raise ProtocolError(f"{where}: {n} bytes of JSON, over its {meta['budget']}")
            return v
        if kind == _BOOL:
            return bool(v)
        if kind == _INT:
            n = int(v)
            if not INT_MIN <= n <= INT_MAX:
                self.clip(where, 1, "a number beyond 64 bits")
                n = max(INT_MIN, min(INT_MAX, n))
            return n
        if kind == _FLOAT:
            x = float(v)
            if not math.isfinite(x):
                self.clip(where, 1, "a number that is not finite")
                x = 0.0
            return x
        if kind == _STR:
            s = v if type(v) is str else str(v)   # surrogates kept: frames.json_bytes
            limit = meta.get("chars", DEFAULT_CHARS)
            if len(s) > limit:
                self.clip(where, len(s) - limit, f"{len(s)} characters, over its {limit}")
                s = s[:limit]
            return s
        items = meta.get("items", DEFAULT_ITEMS)
        if kind == _LIST:
            seq = list(v)
            budget = meta.get("budget")
            if budget is not None and len(seq) <= items:
                whole = self._whole_list(args[0], seq, meta, where, budget)
                if whole is not None:
                    return whole
            out: list[Any] = []
            used = 2
            for i, item in enumerate(seq):
                if len(out) >= items:
                    self.clip(where, len(seq) - i, f"{len(seq)} items, over its {items}")
                    break
                enc = self.value(args[0], item, meta, where + "[]")
                if budget is not None:
                    used += len(json_bytes(enc)) + 1
                    if used > budget:
                        self.clip(where, len(seq) - i, f"over its {budget} bytes")
                        break
                out.append(enc)
            return out
        if kind == _TUPLE:
            return [x if _plain(_kind(a)[2], x, meta) else
                    self.value(a, x, meta, f"{where}[{i}]")
                    for i, (a, x) in enumerate(zip(args, v, strict=True))]
        if kind == _DICT:
            pairs = list(dict(v).items())
            if len(pairs) > items:
                self.clip(where, len(pairs) - items,
                          f"{len(pairs)} entries, over its {items}")
                pairs = pairs[:items]
            d: dict[str, Any] = {}
            for k, x in pairs:
                d[self.value(str, k, meta, where + "{}")] = self.value(args[1], x, meta,
                                                                     where + "{}")
            return d
        raise TypeError(f"{where}: type {tp!r} has no wire form")

    def _whole_list(self, tp: Any, seq: list[Any], meta: dict[str, Any], where: str,
                    budget: int) -> list[Any] | None:
        """`seq` encoded whole and measured once, when that is what the item-by-item
        loop below would give: no item over the count, and the list's JSON within
        `budget` (the loop's running total at its end is that JSON's length plus one:
        compact separators). None otherwise, with nothing counted as clipped: the loop
        then does it item by item (the mount table's steps and pairs were each
        serialized once more only to be measured)."""
        saved = dict(self.clipped)
        try:
            out = [self.value(tp, item, meta, where + "[]") for item in seq]
            if not out or len(json_bytes(out)) + 1 <= budget:
                return out
        except Exception:
            pass
        self.clipped = saved
        return None

    def obj(self, cls: Any, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, cls):
            raise ProtocolError(f"{where or cls.__name__}: {type(v).__name__} is not "
                                f"{cls.__name__}")
        out: dict[str, Any] = {}
        for name, hint, meta, kind in _with_kinds(cls):
            if name == "clipped" and not where:
                continue
            x = getattr(v, name)
            if _plain(kind, x, meta):   # what `value` would return as it is
                out[name] = x
                continue
            out[name] = self.value(hint, x, meta, f"{where}.{name}" if where else name)
        return out


def to_obj(msg: DataclassInstance) -> JSONObject:
    """The message as bounded JSON-ready values. A message with a ``clipped`` field
    (the exit report) is clipped to its bounds and the clippings counted there; any
    other message over a bound is a ProtocolError (a spec is never cut short)."""
    can_clip = any(f.name == "clipped" for f in dataclasses.fields(msg))
    enc = _Enc(clip=can_clip)
    out = enc.obj(type(msg), msg, "")
    if can_clip:
        clipped = {**getattr(msg, "clipped"), **enc.clipped}
        meta = dict(next(f for f in dataclasses.fields(msg) if f.name == "clipped").metadata)
        out["clipped"] = enc.value(dict[str, int], clipped, meta, "clipped")
    return out


def encode(msg: DataclassInstance) -> bytes:
    """One message as UTF-8 JSON, at most `max_size(type(msg))` bytes."""
    return json_bytes(to_obj(msg))


class _Dec:
    """Checks JSON values against a message's shape, exactly (`strict`), or, for
    `build` on the sending side, only the types: bounds are the encoder's job."""

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def value(self, tp: Any, v: Any, meta: dict[str, Any], where: str) -> Any:
        tp, optional, kind, args = _kind(tp)
        if v is None:
            if optional:
                return None
            raise ProtocolError(f"{where}: null is not allowed")
        if kind == _DC:
            return self.obj(tp, v, where)
        if kind == _JSON:
            if not isinstance(v, dict):
                raise ProtocolError(f"{where}: want a JSON object")
            return v     # strict JSON already (parse_json); the message's size bounds it
        if kind == _BOOL:
            if not isinstance(v, bool):
                raise ProtocolError(f"{where}: want a boolean")
            return v
        if kind == _INT:
            if isinstance(v, bool) or not isinstance(v, int) or not INT_MIN <= v <= INT_MAX:
                raise ProtocolError(f"{where}: want a 64-bit integer")
            return v
        if kind == _FLOAT:
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v):
                raise ProtocolError(f"{where}: want a finite number")
            return float(v)
        if kind == _STR:
            if not isinstance(v, str) or (self.strict
                                          and len(v) > meta.get("chars", DEFAULT_CHARS)):
                raise ProtocolError(f"{where}: want a string of at most "
                                    f"{meta.get('chars', DEFAULT_CHARS)} characters")
            return v
        items = meta.get("items", DEFAULT_ITEMS)
        if kind == _LIST:
            if not isinstance(v, list) or (self.strict and len(v) > items):
                raise ProtocolError(f"{where}: want a list of at most {items} items")
            return [self.value(args[0], x, meta, where + "[]") for x in v]
        if kind == _TUPLE:
            if not isinstance(v, (list, tuple)) or len(v) != len(args):
                raise ProtocolError(f"{where}: want a list of {len(args)} items")
            return tuple(self.value(a, x, meta, where) for a, x in zip(args, v))
        if kind == _DICT:
            if not isinstance(v, dict) or (self.strict and len(v) > items):
                raise ProtocolError(f"{where}: want an object of at most {items} items")
            return {self.value(str, k, meta, where): self.value(args[1], x, meta, where)
                    for k, x in v.items()}
        raise ProtocolError(f"{where}: type {tp!r} has no wire form")

    def obj(self, cls: Any, v: Any, where: str) -> Any:
        if not isinstance(v, dict):
            raise ProtocolError(f"{where or cls.__name__}: want an object")
        fields = _fields(cls)
        names = {name for name, _, _ in fields}
        unknown = set(v) - names
        if unknown:
            raise ProtocolError(f"{where or cls.__name__}: unknown field(s) "
                                f"{', '.join(sorted(map(repr, unknown)))[:200]}"
                                + ("" if self.strict else
                                   f" (add them to {cls.__name__} in sandbox/protocol.py)"))
        missing = names - set(v)
        if missing and self.strict:
            raise ProtocolError(f"{where or cls.__name__}: missing field(s) "
                                f"{', '.join(sorted(missing))}")
        kw: dict[str, Any] = {}
        for name, hint, meta, kind in _with_kinds(cls):
            if name not in v:
                continue
            x = v[name]
            # what `value` accepts and returns as it is (exact types; a string's bound is
            # checked when strict): spared the call and the `where` string, as `_plain`
            t = type(x)
            if (t is str and kind == _STR
                    and not (self.strict and len(x) > meta.get("chars", DEFAULT_CHARS))) \
                    or (t is bool and kind == _BOOL) \
                    or (t is int and kind == _INT and INT_MIN <= x <= INT_MAX):
                kw[name] = x
                continue
            kw[name] = self.value(hint, x, meta, f"{where}.{name}" if where else name)
        return cls(**kw)


def from_obj(cls: type[T], obj: object) -> T:
    """A message from JSON values; ProtocolError unless `obj` has exactly its shape."""
    try:
        return typing.cast(T, _Dec().obj(cls, obj, ""))
    except RecursionError:
        raise ProtocolError(f"{cls.__name__}: nested too deeply") from None


def build(cls: type[T], obj: object) -> T:
    """A message from plain values on the sending side (e.g. a summary dict):
    types checked, absent fields defaulted, bounds left to `encode`."""
    return typing.cast(T, _Dec(strict=False).obj(cls, obj, ""))


def decode(cls: type[T], data: bytes) -> T:
    """A message from its JSON bytes (at most `max_size(cls)`), checked exactly."""
    if len(data) > max_size(cls):
        raise ProtocolError(f"{cls.__name__}: {len(data)} bytes, over its "
                            f"{max_size(cls)}-byte bound")
    return from_obj(cls, parse_json(data))


# -- the static bound ----------------------------------------------------------------
def _size(tp: Any, meta: dict[str, Any]) -> int:
    tp, optional, _, _ = _kind(tp)
    if dataclasses.is_dataclass(tp):
        n = max_size(typing.cast(type, tp))
    elif _is_json(tp):
        n = meta["budget"]
    elif tp is bool:
        n = 5
    elif tp is int:
        n = 20
    elif tp is float:
        n = 24          # repr of a finite double: at most '-1.7976931348623157e+308'
    elif tp is str:
        n = 6 * meta.get("chars", DEFAULT_CHARS) + 2   # '\u001f' is the longest escape
    else:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        items = meta.get("items", DEFAULT_ITEMS)
        if origin is list:
            n = 2 + items * (_size(args[0], meta) + 1)
            if meta.get("budget") is not None:
                n = min(n, meta["budget"])
        elif origin is tuple:
            n = 2 + sum(_size(a, meta) + 1 for a in args)
        elif origin is dict:
            n = 2 + items * (_size(str, meta) + 1 + _size(args[1], meta) + 1)
        else:
            raise TypeError(f"type {tp!r} has no wire form")
    return max(n, 4) if optional else n


def max_size(cls: type) -> int:
    """The most bytes `encode` can produce for this message type."""
    return 2 + sum(len(name) + 4 + _size(hint, meta) for name, hint, meta in _fields(cls))



# -- the envelope and its transports ---------------------------------------------------
def name_of(msg: object) -> str:
    try:
        return NAMES[type(msg)]
    except KeyError:
        raise ProtocolError(f"{type(msg).__name__} is not a message of sandbox.protocol") \
            from None


def parse(type_: str, payload: object, *accept: type[T]) -> T:
    """The message a received envelope holds, if it is one of `accept` and exactly of
    its shape; else ProtocolError."""
    cls = MESSAGES.get(type_) if isinstance(type_, str) else None
    if cls is None or cls not in accept:
        want = ", ".join(NAMES[c] for c in accept)
        raise ProtocolError(f"unexpected message {str(type_)[:64]!r} (want {want})")
    return typing.cast(T, from_obj(cls, payload))


def to_frame(msg: DataclassInstance, max_frame: int) -> bytes:
    """One length-prefixed frame for the launcher's control stream."""
    return _frame(name_of(msg), to_obj(msg), max_frame=max_frame)


def envelope_max(cls: type) -> int:
    """The most bytes a message of this type takes as an envelope on the wire (the
    compiled stub and init size their buffers by it: tested)."""
    return len(dumps({"type": NAMES[cls], "payload": None})) - 4 + max_size(cls)


def from_envelope(data: bytes, *accept: type[T], limit: int = DATAGRAM_MAX) -> T:
    """The message one envelope (at most `limit` bytes) holds, if it is one of
    `accept` and exactly of its shape; else ProtocolError."""
    if len(data) > limit:
        raise ProtocolError(f"envelope of {len(data)} bytes, over {limit}")
    obj = parse_json(data)
    if not isinstance(obj, dict) or set(obj) != {"type", "payload"}:
        raise ProtocolError("not an envelope {type, payload}")
    return parse(obj["type"], obj["payload"], *accept)


def to_datagram(msg: DataclassInstance) -> bytes:
    data = json_bytes({"type": name_of(msg), "payload": to_obj(msg)})
    if len(data) > DATAGRAM_MAX:
        raise ProtocolError(f"{name_of(msg)}: {len(data)} bytes, over the {DATAGRAM_MAX}-byte "
                            "datagram bound")
    return data


def forked_datagram(pid: int) -> bytes:
    """`to_datagram(Forked(pid))` without the codec, for the zygote's loop: every page that
    loop writes while a stub lives becomes the stub's own copy (and its sandbox's PID
    2's), and the typed codec writes many (tests/test_protocol.py holds the two equal)."""
    return b'{"type":"forked","payload":{"pid":%d}}' % pid


def fork_stub_from_datagram(data: bytes) -> ForkStub:
    """`from_datagram(data, ForkStub)` without the typed codec's Python, for the new stub
    (sandbox.monitor.zygote): each of its functions the stub runs writes pages that
    are then its Python action's own (~190 KiB). The same checks, written out for
    this one shape: the envelope, exactly the three fields, two booleans, at most 16
    strings of at most 4096 characters (tests/test_protocol.py holds it to the
    codec)."""
    if len(data) > DATAGRAM_MAX:
        raise ProtocolError(f"envelope of {len(data)} bytes, over {DATAGRAM_MAX}")
    obj = parse_json(data)
    if type(obj) is not dict or obj.keys() != _ENVELOPE_KEYS:
        raise ProtocolError("not an envelope {type, payload}")
    if obj["type"] != "fork_stub":
        raise ProtocolError(f"unexpected message {str(obj['type'])[:64]!r} (want fork_stub)")
    body = obj["payload"]
    if type(body) is not dict or body.keys() != _FORK_STUB_KEYS:
        raise ProtocolError("fork_stub: want exactly namespaces, network, cgroup_procs")
    ns, net, procs = body["namespaces"], body["network"], body["cgroup_procs"]
    if type(ns) is not bool or type(net) is not bool:
        raise ProtocolError("fork_stub: namespaces and network want booleans")
    if type(procs) is not list or len(procs) > 16 \
            or any(type(p) is not str or len(p) > 4096 for p in procs):
        raise ProtocolError("fork_stub.cgroup_procs: want a list of at most 16 strings of "
                            "at most 4096 characters")
    return ForkStub(namespaces=ns, network=net, cgroup_procs=procs)


_ENVELOPE_KEYS = frozenset({"type", "payload"})
_FORK_STUB_KEYS = frozenset({"namespaces", "network", "cgroup_procs"})


def from_datagram(data: bytes, *accept: type[T]) -> T:
    return from_envelope(data, *accept, limit=DATAGRAM_MAX)


# MSG_TRUNC | MSG_CTRUNC as a plain int, computed once: `|` of socket's IntFlag members
# runs the enum module's Python, ~190 KiB of page copies in a fresh fork of the
# template (the stub and PID 1 test it on every datagram they take)
TRUNCATED = int(socket.MSG_TRUNC) | int(socket.MSG_CTRUNC)


def send(sock: socket.socket, msg: DataclassInstance, fds: typing.Sequence[int] = ()) -> None:
    """One message as one datagram (SOCK_SEQPACKET), `fds` beside it (SCM_RIGHTS)."""
    data = to_datagram(msg)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv(sock: socket.socket, *accept: type[T],
         max_fds: int = MAX_FDS) -> tuple[T | None, list[int]]:
    """The next message (None at end of stream) and the descriptors beside it. A message
    that is not one of `accept`, truncated, or with more descriptors than `max_fds`,
    raises ProtocolError; the descriptors that came with it are closed first."""
    data, fds, flags, _ = socket.recv_fds(sock, DATAGRAM_MAX + 1, max_fds)
    try:
        if flags & TRUNCATED:
            raise ProtocolError("datagram or its descriptors truncated")
        if not data:
            if fds:
                raise ProtocolError("descriptors without a message")
            return None, []
        return from_datagram(data, *accept), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def resolve_all() -> None:
    """Fill the codec's caches (`_hints`, `_fields`, `_kind`) for every message class
    and those nested in them. The monitor host calls it before it forks its template
    (sandbox.monitor.preload), so that the stub, PID 1 and a Python action fill
    nothing (issue 14). Any other process (the CLI, a launcher) fills them class by
    class as it uses them: resolving all at import was ~5 ms of every start here."""
    for cls in MESSAGES.values():
        max_size(cls)   # resolves the hints of every nested message class too


# PID 1's messages to the monitor that have a fixed form, as bytes made once, in the
# template: the typed codec's Python in PID 1 writes pages that are then its Python
# action's own (docs/benchmarks-journal.md). tests/test_protocol.py holds them to the codec.
ACK_OK = to_datagram(Ack(ok=True))
FD_DATAGRAMS: dict[type, bytes] = {cls: to_datagram(cls())
                                   for cls in (OutputFd, CowFd, ScratchFd, ShmFd)}


def listener_datagram(fd: int) -> bytes:
    """`to_datagram(ListenerAt(fd))` without the codec (above)."""
    return b'{"type":"listener","payload":{"fd":%d}}' % fd


_READY_BOUNDS = tuple(bounds_of(Ready, name) for name in ("active", "skipped", "timings"))


def ready_datagram(active: list[str], skipped: dict[str, str],
                   timings: dict[str, float]) -> bytes:
    """`to_datagram(Ready(active, skipped, timings))`, without the codec when every
    string is ASCII within its bound and every timing a finite float (a fresh fork's
    first Ready through the codec copies ~250 KiB: the program's, PID 1 sends it just
    before it forks the program); anything else goes through the codec, which says
    why it does not fit. tests/test_protocol.py holds the two equal."""
    act, skip, tim = _READY_BOUNDS
    if len(active) > act.items or len(skipped) > skip.items or len(timings) > tim.items \
            or not all(type(a) is str and a.isascii() and len(a) <= act.chars
                       for a in active) \
            or not all(type(k) is str and k.isascii() and len(k) <= skip.chars
                       and type(v) is str and v.isascii() and len(v) <= skip.chars
                       for k, v in skipped.items()) \
            or not all(type(k) is str and k.isascii() and len(k) <= tim.chars
                       and type(v) is float and math.isfinite(v) for k, v in timings.items()):
        return to_datagram(Ready(active=list(active), skipped=dict(skipped),
                                 timings=dict(timings)))
    return json_bytes({"type": "ready", "payload": {"active": active, "skipped": skipped,
                                                    "timings": timings}})


def send_fd(sock: socket.socket, cls: type, fd: int) -> None:
    """`send(sock, cls(), [fd])` for a message of no field (FD_DATAGRAMS), without the
    codec."""
    socket.send_fds(sock, [FD_DATAGRAMS[cls]], [fd])


def recv_ack_ok(sock: socket.socket) -> bool:
    """Whether the next datagram is `Ack(ok=True)` with no descriptor (any descriptor
    that came is closed): `recv(sock, Ack, max_fds=0)` and its `ok`, without the
    codec; anything else is False, as a refusal is."""
    data, fds, flags, _ = socket.recv_fds(sock, len(ACK_OK) + 1, 1)
    for fd in fds:
        os.close(fd)
    return not fds and not flags & TRUNCATED and data == ACK_OK
