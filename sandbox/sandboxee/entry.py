"""PID 1 until the program starts: contain, fork the program, become the init.

Everything this process will need after Landlock and the mount view are in
place is imported before `contain()` (by the monitor, before it forks), so
only the action's own modules are read from inside the view. The init binary
(`sandbox/_native/sandbox-init`) is opened *before* the view is built and
started by descriptor (execveat), and a Landlock rule names that one file: the
sandbox's own runtime never depends on what the policy lets the program see.

Order, once every layer is applied (the init is under every one of them):

1. ``ready`` goes to the monitor; every signal is blocked;
2. fork: the child (PID 2) restores default signal dispositions and an empty
   mask, takes the terminal when there is one, and execs the program (or runs
   the workflow). An exec failure is reported as ``exec_error`` with its errno
   and the child exits 127 (not found) or 126 (found, cannot execute), as a
   shell does;
3. the parent closes everything but the exit pipe and execs the init, which
   reaps orphans, forwards signals and reports the program's wait status.

The monitor socket (SOCK_SEQPACKET) carries JSON messages from here to the
monitor: the seccomp listener descriptor (with SCM_RIGHTS), ``ready`` with the
layers applied, or ``setup_error`` / ``exec_error``. It is close-on-exec, so
neither the program nor the init ever holds it. Nothing here writes to stdout
or stderr: they belong to the program.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import termios
from typing import Any

import prctl

from sandbox import _native
from sandbox.errors import SetupError
# Imported now, never lazily under the view (which may hold none of this package):
from sandbox.isolation import syscall_table  # noqa: F401
from sandbox.isolation.contain import contain
from sandbox.isolation.context import ContainContext

EXIT_SETUP = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


def _report(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def main(ctx: ContainContext, spec: dict[str, Any]) -> None:
    """Never returns."""
    mon = socket.socket(fileno=ctx.monitor_fd)
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        os.environ.clear()
        os.environ.update(spec["env"])
        init_fd = _native.open_init(spec.get("init_path"))
        if (spec.get("stdio") or {}).get("tty") and os.isatty(0):
            ctx.tty = os.ttyname(0)   # the monitor's pty, named in the host's /dev/pts
        ctx.init_fd = init_fd
        ctx.keep_fds = (*ctx.keep_fds, init_fd, *([ctx.exit_fd] if ctx.exit_fd >= 0 else []))
        contain(ctx)
        if not ctx.namespaces:
            os.chdir(ctx.paths.workdir)
        if ctx.listener_fd is not None:
            # named, not sent: with a private network the filter hands sendmsg to the
            # monitor, which cannot answer before it holds the listener; it takes it
            # (pidfd_getfd) and acknowledges (sandbox/monitor/supervisor.py)
            _report(mon, {"type": "listener", "fd": ctx.listener_fd})
            if mon.recv(16) != b"ok":
                raise SetupError("seccomp", "the monitor could not take the notification "
                                            "listener")
            os.close(ctx.listener_fd)
        if ctx.output_fd is not None:   # after the listener: its sendmsg may be mediated;
            # the monitor copies it out when the run ends
            _report(mon, {"type": "output"}, [ctx.output_fd])
            os.close(ctx.output_fd)
            ctx.output_fd = None
        if ctx.scratch_fd >= 0:
            # the monitor looks at the private /tmp's free space once the run is over
            # (RunResult.hints: "the private /tmp was full"); the descriptor, opened by
            # the mount layer before any filter, keeps the tmpfs for it till then
            _report(mon, {"type": "scratch"}, [ctx.scratch_fd])
            os.close(ctx.scratch_fd)
            ctx.scratch_fd = -1
        _report(mon, {"type": "ready", "active": ctx.active, "skipped": ctx.skipped,
                      "timings": ctx.timings})
    except SetupError as exc:
        _report(mon, {"type": "setup_error", "layer": exc.layer, "message": str(exc)})
        os._exit(EXIT_SETUP)
    except BaseException as exc:
        _report(mon, {"type": "setup_error", "layer": "sandboxee",
                      "message": f"{type(exc).__name__}: {exc}"})
        os._exit(EXIT_SETUP)

    signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
    try:
        child = os.fork()
    except OSError as exc:
        _report(mon, {"type": "setup_error", "layer": "init", "message": f"fork: {exc}"})
        os._exit(EXIT_SETUP)
    if child == 0:
        _program(ctx, spec, mon)  # never returns
    _become_init(ctx, mon, child)


def _program(ctx: ContainContext, spec: dict[str, Any], mon: socket.socket) -> None:
    """PID 2: the program with the signal state a shell would give it. Never returns."""
    code = EXIT_SETUP
    try:
        for fd in (ctx.init_fd, ctx.exit_fd):
            if fd >= 0:
                os.close(fd)
        # Python ignores SIGPIPE and SIGXFSZ, and an ignored disposition survives
        # exec: a program must start with the defaults, or `yes | head` never ends.
        for sig in signal.valid_signals():
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                try:
                    signal.signal(sig, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.setsid()  # a session of its own, as PID 1's was: no terminal but its own pty
        if (spec.get("stdio") or {}).get("tty"):
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if spec["mode"] == "exec":
            _exec(spec["argv"], mon)
        mon.close()
        from sandbox.sandboxee import worker
        code = worker.run(ctx.ipc_fd)
    finally:
        os._exit(code)


def _exec(argv: list[str], mon: socket.socket) -> None:
    path = argv[0]
    if "/" not in path:
        path = shutil.which(path, path=os.environ.get("PATH", "")) or path
    try:
        os.execve(path, argv, os.environ)
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno in (errno.ENOENT, errno.ENOTDIR) else \
            EXIT_CANNOT_EXECUTE
        searched = "/" not in argv[0] and path == argv[0]
        try:
            _report(mon, {"type": "exec_error", "program": argv[0], "path": path,
                          "errno": exc.errno, "searched_path": searched,
                          "message": f"{argv[0]}: {exc.strerror}"})
        except OSError:
            pass
        os._exit(code)


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
            _report(mon, {"type": "setup_error", "layer": "init",
                          "message": f"cannot start the sandbox's init: {exc.strerror}"})
        finally:
            os.kill(child, signal.SIGKILL)
            os._exit(EXIT_SETUP)
