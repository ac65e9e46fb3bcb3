"""The stub: the monitor's child that enters the namespaces and forks PID 1.

Python 3.11 has no clone(), so a new PID namespace is entered the unshare way:
the stub unshares every namespace, and its next fork becomes PID 1. The stub
then keeps only the pipe to the monitor, waits for PID 1, reports its raw wait
status, and exits. It holds no other descriptor, so the IPC socket reaches end
of stream as soon as the sandbox's last process is gone.

Protocol on the pipe (text lines): ``pid N`` (PID 1's pid in the monitor's
namespace), then ``exit STATUS`` (raw waitpid status), or ``setup LAYER MSG``
when the namespaces could not be entered.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Callable

import prctl

from sandbox.errors import SetupError
from sandbox.isolation import namespaces
from sandbox.isolation.context import ContainContext


def run(ctx: ContainContext, report_fd: int, pid1_main: Callable[[], Any],
        join_cgroup: Callable[[int], None] | None = None) -> None:
    """Never returns."""
    code = 0
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
        try:
            os.write(report_fd, f"setup stub {type(exc).__name__}: {exc}\n".encode())
        except OSError:
            pass
        code = 1
    os._exit(code)
