"""PID 1 until the program starts: contain, fork the program, become the init.

Everything this process will need after Landlock and the mount view are in
place is imported before `contain()` (by the monitor, before it forks), so
only the action's own modules are read from inside the view. The init binary
(`sandbox/_native/sandbox-init`) is opened *before* the view is built and
started by descriptor (execveat), and a Landlock rule names that one file: the
sandbox's own runtime never depends on what the policy lets the program see.

Order, once every layer is applied (the init is under every one of them):

1. ``ready`` goes to the monitor; every signal is blocked;
2. a program: this process searches PATH and execs the init at once, which
   forks PID 2 (init.c ``--exec``): no fork of this Python process, whose
   copy would only exec (~4-5 ms of CPU per run, docs/benchmarks-journal.md);
   a workflow: fork, and the child (PID 2) runs it while the parent closes
   everything but the exit pipe and execs the init;
3. PID 2 has default signal dispositions and an empty mask, a session of its
   own, and the terminal when there is one. An exec failure is reported as
   ``exec_error`` with its errno and PID 2 exits 127 (not found) or 126
   (found, cannot execute), as a shell does. The init reaps orphans,
   forwards signals and reports the program's wait status.

The monitor socket (SOCK_SEQPACKET) carries typed messages (sandbox.protocol)
from here to the monitor: where the seccomp listener is (`ListenerAt`, which
the monitor acknowledges), the ${OUTPUT} and /tmp descriptors (with
SCM_RIGHTS), `Ready` with the layers applied, or `SetupFailure` / `ExecError`. It is close-on-exec, so
neither the program nor the init ever holds it. Nothing here writes to stdout
or stderr: they belong to the program.
"""
from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module under `signal`
import fcntl
import os
import shutil
import signal
import socket
import termios

import prctl

from sandbox import _native, protocol
from sandbox.errors import SetupError
# Imported now, never lazily under the view (which may hold none of this package):
from sandbox.isolation import apart, syscall_table  # noqa: F401
from sandbox.isolation.contain import contain
from sandbox.isolation.context import ContainContext
from sandbox.protocol import (CallerWire, CowFd, ExecError, ExecFailure, OutputFd, ScratchFd,
                              SetupFailure, ShmFd, Spec)
from sandbox.sandboxee import forking, inherit, memtrace

EXIT_SETUP = 125   # an exec failure's 126 and 127 are init.c's (start_program)


def _setup_failure(layer: str, message: str) -> SetupFailure:
    return SetupFailure(layer, message[:4000])


def trace_start() -> tuple[int, ...]:
    """SANDBOX_MEMTRACE's first mark of PID 1 (sandbox/sandboxee/memtrace.py): the
    descriptors to keep for it."""
    if not memtrace.ON:
        return ()
    import time
    time.sleep(0.05)   # the stub has exec'd: its copies are PID 1's alone
    fd = memtrace.pin()
    memtrace.mark("pid1.start")
    return (fd,)


def main(ctx: ContainContext, spec: Spec) -> None:
    """Never returns."""
    mon = socket.socket(fileno=ctx.monitor_fd)
    ctx.keep_fds = (*ctx.keep_fds, *trace_start())
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        os.environ.clear()
        os.environ.update(spec.env)
        inherit.apply(spec.caller)
        init_fd = _native.open_init(spec.init_path)
        if spec.stdio.tty is not None and os.isatty(0):
            ctx.tty = os.ttyname(0)   # the monitor's pty, named in the host's /dev/pts
        ctx.init_fd = init_fd
        ctx.keep_fds = (*ctx.keep_fds, init_fd, *([ctx.exit_fd] if ctx.exit_fd >= 0 else []))
        # The setup child (isolation/apart.py) keeps the namespace layers' pages out of
        # a Python action's PID 2, a fork of this process. A program's PID 2 execs and
        # this process execs the init: their pages go then, and the child would only
        # cost its fork (+4.4 ms of CPU per run, docs/benchmarks-journal.md).
        contain(ctx, apart=spec.mode != "exec", before_filter=lambda c: _last_unfiltered(c, mon))
        if not ctx.namespaces and ctx.listener_fd is None:
            os.chdir(ctx.paths.workdir)     # no filter was installed (nothing to wait on)
        report(ctx, mon)
    except SetupError as exc:
        protocol.send(mon, _setup_failure(exc.layer, str(exc)))
        os._exit(EXIT_SETUP)
    except BaseException as exc:
        protocol.send(mon, _setup_failure("sandboxee", f"{type(exc).__name__}: {exc}"))
        os._exit(EXIT_SETUP)
    start_program(ctx, mon, tty=spec.stdio.tty is not None, mode=spec.mode, argv=spec.argv,
                  caller=spec.caller)


def _last_unfiltered(ctx: ContainContext, mon: socket.socket) -> None:
    """Just before the seccomp layer: the descriptors go to the monitor, and without a
    mount view the working directory is set here, since chdir is notified with an
    audit (probe 1, F8) and nothing could answer it before `report` hands over the
    listener."""
    hand_over(ctx, mon)
    if not ctx.namespaces:
        os.chdir(ctx.paths.workdir)


def hand_over(ctx: ContainContext, mon: socket.socket) -> None:
    """The mount layer's descriptors, to the monitor: `contain` calls this before the
    seccomp layer, where each sendmsg is a plain system call (after it, a private
    network's filter hands every sendmsg to the monitor: three round trips through
    the notification thread per run, ~1.5 ms). Each is sent once (`report` sends
    what is left when the sequence stopped earlier)."""
    if ctx.output_fd is not None:   # the monitor copies it out when the run ends
        protocol.send_fd(mon, OutputFd, ctx.output_fd)
        os.close(ctx.output_fd)
        ctx.output_fd = None
    if ctx.cow_fd is not None:   # the copy-on-write layer's tmpfs: exported the same way
        protocol.send_fd(mon, CowFd, ctx.cow_fd)
        os.close(ctx.cow_fd)
        ctx.cow_fd = None
    if ctx.scratch_fd >= 0:
        # the monitor looks at the private /tmp's free space once the run is over
        # (RunResult.hints: "the private /tmp was full"); the descriptor, opened by
        # the mount layer, keeps the tmpfs for it till then
        protocol.send_fd(mon, ScratchFd, ctx.scratch_fd)
        os.close(ctx.scratch_fd)
        if ctx.shm_fd >= 0:
            protocol.send_fd(mon, ShmFd, ctx.shm_fd)
            os.close(ctx.shm_fd)
            ctx.shm_fd = -1
        ctx.scratch_fd = -1


def report(ctx: ContainContext, mon: socket.socket) -> None:
    """Once every layer is applied: the listener, what `hand_over` has not sent, and
    `Ready` to the monitor. Raises SetupError (the listener not taken)."""
    if ctx.listener_fd is not None:
        # named, not sent: with a private network the filter hands sendmsg to the
        # monitor, which cannot answer before it holds the listener; it takes it
        # (pidfd_getfd) and acknowledges (sandbox/monitor/supervisor.py)
        # the fixed-form messages without the typed codec (protocol.ACK_OK)
        mon.send(protocol.listener_datagram(ctx.listener_fd))
        if not protocol.recv_ack_ok(mon):
            raise SetupError("seccomp", "the monitor could not take the notification "
                                        "listener")
        os.close(ctx.listener_fd)
    hand_over(ctx, mon)
    memtrace.mark("pid1.ready")
    ctx.timings.update(memtrace.MARKS)
    # Every signal blocked before Ready: the monitor relays what the caller sent before
    # now once Ready came, and PID 1, a namespace's init, would drop a signal it neither
    # handles nor blocks; blocked, it waits for the init, which passes it on (init.c)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, _signal.valid_signals())
    mon.send(protocol.ready_datagram(ctx.active, ctx.skipped, ctx.timings))


def start_program(ctx: ContainContext, mon: socket.socket, *, tty: bool, mode: str,
                  argv: list[str] | None, caller: CallerWire | None = None) -> None:
    """Fork PID 2 (the program) and become the init. Never returns."""
    apart.reap()
    # `_signal`, not `signal`'s wrappers, which make an enum member of each signal
    _signal.pthread_sigmask(_signal.SIG_SETMASK, _signal.valid_signals())
    if mode == "exec":
        _exec_through_init(ctx, mon, tty, argv or [], caller)   # never returns
    try:
        child = forking.fork_single_threaded()
    except OSError as exc:
        protocol.send(mon, _setup_failure("init", f"fork: {exc}"))
        os._exit(EXIT_SETUP)
    if child == 0:
        _program(ctx, mon, tty, caller)  # never returns
    _become_init(ctx, mon, child)


def _program(ctx: ContainContext, mon: socket.socket, tty: bool,
             caller: CallerWire | None) -> None:
    """PID 2 of a workflow, with the signal state a shell would give it (an exec'd
    program's PID 2 is the init's fork: init.c). Never returns."""
    code = EXIT_SETUP
    try:
        for fd in (ctx.init_fd, ctx.exit_fd):
            if fd >= 0:
                os.close(fd)
        # Python ignores SIGPIPE and SIGXFSZ (the template also SIGINT, SIGQUIT, SIGTTIN,
        # SIGTTOU), and an ignored disposition survives exec: a program the action starts
        # must start with the defaults, or `yes | head` never ends. Through `_signal`, not `signal`'s
        # wrappers, which make an enum member of every number they take and return
        # (~0.3 ms of CPU for the 62 signals in a warm process; ~0.03 ms this way).
        for sig in _signal.valid_signals():
            if sig != _signal.SIGKILL and sig != _signal.SIGSTOP:
                try:
                    _signal.signal(sig, _signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
        if caller is not None:
            inherit.signal_state(caller)   # what the caller ignored or blocked, as exec keeps
        os.setsid()  # a session of its own, as PID 1's was: no terminal but its own pty
        if tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        mon.close()
        from sandbox.sandboxee import worker
        code = worker.run(ctx.ipc_fd)
    finally:
        os._exit(code)


_ERRNO = b'"errno":0'   # where `exec_error_halves` cuts: no JSON string can hold it


def exec_error_halves(program: str, path: str, searched: bool) -> tuple[bytes, bytes]:
    """The `ExecError` PID 2 sends if its exec fails, encoded here with the codec and
    cut where the errno goes: init.c writes the first half, the errno, the second.
    Its message is left empty, for the monitor to word (`protocol.exec_message`). The cut is
    unambiguous: inside an encoded string every '"' is escaped, so '"errno":0' is
    the field and nothing else."""
    data = protocol.to_datagram(ExecError(
        ExecFailure(program=program[:4096], path=path[:4096], errno=0, searched=searched)))
    at = data.index(_ERRNO) + len(_ERRNO) - 1
    return data[:at], data[at + 1:]


def _exec_through_init(ctx: ContainContext, mon: socket.socket, tty: bool,
                       argv: list[str], caller: CallerWire | None) -> None:
    """An exec'd program: search PATH here, then become the init, which forks PID 2 and
    execs the program (init.c ``--exec``). Never returns."""
    path = argv[0]
    if "/" not in path:
        path = shutil.which(path, path=os.environ.get("PATH", "")) or path
    head, tail = exec_error_halves(argv[0], path, "/" not in argv[0] and path == argv[0])
    exit_fd = ctx.exit_fd
    # "TTY,IGNORED,BLOCKED,CLOSED": the caller's signal state, which PID 2 keeps, and
    # its closed standard descriptors, closed in PID 2 (init.c)
    sets = ("1" if tty else "0") + inherit.init_sets(caller or CallerWire())
    try:
        if exit_fd >= 0:
            os.set_inheritable(exit_fd, True)
        os.set_inheritable(mon.fileno(), True)
        init_argv: list[str | bytes] = [
            "sandbox-init", "--exec", str(exit_fd if exit_fd >= 0 else 255),
            str(mon.fileno()), sets, head, tail, path, *argv]
        os.execve(ctx.init_fd, init_argv, os.environ)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        try:
            protocol.send(mon, _setup_failure("init", f"cannot start the sandbox's init: {why}"))
        finally:
            os._exit(EXIT_SETUP)


def _become_init(ctx: ContainContext, mon: socket.socket, child: int) -> None:
    """Replace this process with sandbox-init, holding only the exit pipe. Never returns."""
    exit_fd = ctx.exit_fd
    try:
        os.close(ctx.ipc_fd)
        for fd in (0, 1, 2):
            os.close(fd)
        if exit_fd >= 0:
            os.set_inheritable(exit_fd, True)
        argv = ["sandbox-init", str(exit_fd if exit_fd >= 0 else 255), str(child)]
        os.execve(ctx.init_fd, argv, {})
    except OSError as exc:
        try:
            protocol.send(mon, _setup_failure(
                "init", f"cannot start the sandbox's init: {exc.strerror}"))
        finally:
            os.kill(child, signal.SIGKILL)
            os._exit(EXIT_SETUP)
