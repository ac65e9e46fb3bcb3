"""The messages between the launcher, the fork server, the monitor host, its
zygote, the stub, PID 1 and the init: one dataclass each, named in `MESSAGES`.

The exit report, the largest, is in sandbox.protocol.report; what is handed to PID 1
as marshal rather than as a message is in sandbox.protocol.pid1."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from sandbox.protocol.bounds import Json, MAX_ARG_STRLEN, TYPED_AHEAD, bound
from sandbox.protocol.report import ExecFailure, ExitReport, SetupFailure

__all__ = ['RunPathsWire', 'WinSize', 'StdioWire', 'CallerWire', 'PolicySource',
           'POLICY_SOURCES_MAX', 'Spec', 'Cancel', 'Signal', 'SpawnRequest', 'Spawned',
           'MonitorExited', 'Refused', 'ForkStub', 'Forked', 'ViewReady', 'StubReady',
           'Pid1Exited', 'ProgramExited', 'ProgramStopped', 'ListenerAt', 'Ack',
           'OutputFd', 'ShmFd', 'CowFd', 'ScratchFd', 'ProxyFds', 'Ready', 'ExecError',
           'exec_message', 'MESSAGES', 'NAMES']


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
    when it agrees with the init's exit code (setup_messages.py `program_status`)."""
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
