"""The stub: the monitor's child that enters the namespaces and forks PID 1.

Python 3.11 has no clone(), so a new PID namespace is entered the unshare way:
the stub unshares every namespace, and its next fork becomes PID 1. The stub
then keeps only the pipe to the monitor, waits for PID 1, reports its raw wait
status, and exits. It holds no other descriptor, so the IPC socket reaches end
of stream as soon as the sandbox's last process is gone.

Protocol on the pipe (text lines): ``pid N`` (PID 1's pid in the monitor's
namespace), then ``exit STATUS`` (raw waitpid status), or ``setup LAYER MSG``
when the namespaces could not be entered. A spare's stub (`run_waiting`)
first writes ``prestarted ok`` or ``prestarted failed REASON``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
from typing import Any, Callable

import prctl

from sandbox.errors import SetupError
from sandbox.isolation import libc, limits, namespaces
from sandbox.isolation.context import ContainContext


def run(ctx: ContainContext, report_fd: int, pid1_main: Callable[[], Any],
        join_cgroup: Callable[[int], None] | None = None) -> None:
    """Never returns."""
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if join_cgroup is not None:
            join_cgroup(os.getpid())  # before unshare: the cgroup is named in the host's view
        if ctx.namespaces:
            try:
                namespaces.enter(ctx)
            except SetupError as exc:
                if not ctx.policy.best_effort:
                    os.write(report_fd, f"setup {exc.layer} {exc}\n".encode())
                    os._exit(0)
                ctx.namespaces = False
                ctx.skipped[exc.layer] = str(exc)
    except BaseException as exc:
        _last_word(report_fd, exc)
    _fork_pid1_and_wait(report_fd, pid1_main)


def run_waiting(report_fd: int, go_fd: int, join_cgroup: Callable[[int], None] | None,
                start: Callable[[dict[str, Any], list[int]], Callable[[], Any]]) -> None:
    """A spare stub: join the cgroup and enter every namespace *before* the run is
    known, then wait on `go_fd` for the spec and the run's descriptors (ipc, stdin,
    stdout, stderr). `start(spec, fds)` returns PID 1's main. Never returns.

    First status line: ``prestarted ok`` or ``prestarted failed REASON`` (the
    monitor then discards this stub and starts a fresh one)."""
    try:
        prctl.set_pdeathsig(signal.SIGKILL)
        if join_cgroup is not None:
            join_cgroup(os.getpid())
        uid, gid = os.getuid(), os.getgid()  # after unshare they read as the overflow id
        caps = limits.user_ns_caps()         # the parent's, likewise
        try:
            libc.unshare(namespaces.ALL | libc.CLONE_NEWNET)
            namespaces.map_self(uid, gid)
            limits.bound_user_ns(caps)
        except (OSError, SetupError) as exc:
            os.write(report_fd, f"prestarted failed {exc}\n".encode())
            os._exit(0)
        os.write(report_fd, b"prestarted ok\n")
        data, fds, _, _ = socket.recv_fds(socket.socket(fileno=go_fd), GO_MAX, 8)
        if not data:
            os._exit(0)  # discarded before use
        pid1_main = start(json.loads(data), fds)
    except BaseException as exc:
        _last_word(report_fd, exc)
    _fork_pid1_and_wait(report_fd, pid1_main)


GO_MAX = 16 << 20  # the spec (policy, plan, environment) in one SOCK_SEQPACKET message


def _fork_pid1_and_wait(report_fd: int, pid1_main: Callable[[], Any]) -> None:
    code = 0
    try:
        pid = os.fork()
        if pid == 0:
            try:
                pid1_main()
            finally:
                os._exit(126)
        os.write(report_fd, f"pid {pid}\n".encode())
        from sandbox.isolation.privileges import close_fds
        close_fds({report_fd})
        os.close(0), os.close(1), os.close(2)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        os.write(report_fd, f"exit {status}\n".encode())
    except BaseException as exc:  # last resort: say why, never hang the monitor
        _last_word(report_fd, exc)
        code = 1
    os._exit(code)


def _last_word(report_fd: int, exc: BaseException) -> None:
    try:
        os.write(report_fd, f"setup stub {type(exc).__name__}: {exc}\n".encode())
    except OSError:
        pass
    os._exit(1)
