"""Run a function inside the containment sequence, without the launcher.

For unit tests of single layers: forks a stub that enters the namespaces,
forks PID 1, applies the sequence up to `until`, runs `fn()` and sends its
JSON-serialisable return value (or the error) back through a pipe. Works as
root and as an unprivileged user.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import traceback
from typing import Any, Callable

from sandbox.isolation import namespaces
from sandbox.isolation.contain import contain
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan


def make_paths(base: str) -> RunPaths:
    paths = RunPaths(rundir=base, workdir=os.path.join(base, "work"),
                     output=os.path.join(base, "output"), tmp=os.path.join(base, "tmp"))
    for p in (paths.workdir, paths.output, paths.tmp):
        os.makedirs(p, exist_ok=True)
    return paths


def _stand_in_monitor(fd: int | None, ctx: ContainContext) -> None:
    """The layers under test have no monitor: with a listener (a private network
    mediates connects), answer as the monitor does so calls do not wait: EPERM
    for what the filter refuses in errno mode (seccomp.errno_via_notify),
    CONTINUE for the rest."""
    if fd is None:
        return
    import threading
    from sandbox.isolation import seccomp
    from sandbox.monitor.seccomp_notify import Listener, violation_of
    lst = Listener(fd, own=False)
    syscalls = ctx.policy.syscalls
    table = seccomp.table_for(seccomp.audited_syscalls(syscalls, ctx.audit_files),
                              seccomp.notify_set_for(ctx.audit_files, ctx.policy.network.mode,
                                                     ctx.policy.syscalls.on_violation),
                              ctx.policy.network.mode)

    def serve() -> None:
        while True:
            try:
                n = lst.recv()
                if n is None:
                    continue
                if syscalls.on_violation == "errno" and violation_of(n, table) is not None:
                    lst.respond_error(n.id, errno.EPERM)
                else:
                    lst.respond_continue(n.id)
            except OSError:
                return
    threading.Thread(target=serve, daemon=True).start()


def run_layers(policy: Policy, fn: Callable[[], Any], *, base: str,
               until: str | None = None, use_namespaces: bool = True,
               fs_plan: FsPlan | None = None, mount_table: Any = None) -> dict[str, Any]:
    """Returns {"ok": True, "value": ..., "active": [...]} or {"ok": False, "error": ...}."""
    rfd, wfd = os.pipe()
    mon_parent, mon_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ipc_parent, ipc_child = socket.socketpair()
    ctx = ContainContext(policy=policy, paths=make_paths(base), fs_plan=fs_plan or FsPlan(), ipc_fd=ipc_child.fileno(),
                         monitor_fd=mon_child.fileno(), keep_fds=(wfd,),
                         outer_uid=os.getuid(), outer_gid=os.getgid(),
                         namespaces=use_namespaces, mount_table=mount_table)
    stub = os.fork()
    if stub == 0:
        code = 70
        try:
            os.close(rfd)
            if use_namespaces:
                namespaces.enter(ctx)
            pid1 = os.fork()
            if pid1 == 0:
                out: dict[str, Any]
                try:
                    contain(ctx, until=until)
                    _stand_in_monitor(ctx.listener_fd, ctx)
                    out = {"ok": True, "value": fn(), "active": ctx.active,
                           "skipped": ctx.skipped}
                except BaseException as exc:  # reported to the test, not swallowed
                    out = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                           "traceback": traceback.format_exc()}
                os.write(wfd, json.dumps(out).encode())
                os._exit(0)
            _, status = os.waitpid(pid1, 0)
            code = os.waitstatus_to_exitcode(status) & 0xFF
        except BaseException:
            os.write(wfd, json.dumps({"ok": False, "error": traceback.format_exc()}).encode())
        finally:
            os._exit(code)
    os.close(wfd)
    mon_child.close()
    ipc_child.close()
    chunks = []
    while True:
        b = os.read(rfd, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(rfd)
    os.waitpid(stub, 0)
    mon_parent.close()
    ipc_parent.close()
    if not chunks:
        return {"ok": False, "error": "sandboxee died without a report"}
    return json.loads(b"".join(chunks))
