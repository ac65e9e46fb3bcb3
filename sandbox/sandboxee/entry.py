"""PID 1: apply the containment sequence, then exec the program or run the workflow.

Everything this process will need after Landlock and the mount view are in
place is imported before `contain()` (by the monitor, before it forks), so
only the action's own modules are read from inside the view.

The monitor socket (SOCK_SEQPACKET) carries JSON messages from here to the
monitor: the seccomp listener descriptor (with SCM_RIGHTS), ``ready`` with the
layers applied, or ``setup_error`` / ``exec_error``. It is close-on-exec, so
an exec'd program never holds it; a workflow closes it before the first action
runs. Nothing here writes to stdout or stderr: they belong to the program.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from typing import Any

import prctl

from sandbox.errors import SetupError
from sandbox.isolation.contain import contain
from sandbox.isolation.context import ContainContext

EXIT_SETUP = 125
EXIT_EXEC = 127


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
        contain(ctx)
        if not ctx.namespaces:
            os.chdir(ctx.paths.workdir)
        if ctx.listener_fd is not None:
            _report(mon, {"type": "listener"}, [ctx.listener_fd])
            os.close(ctx.listener_fd)
        _report(mon, {"type": "ready", "active": ctx.active, "skipped": ctx.skipped,
                      "timings": ctx.timings})
    except SetupError as exc:
        _report(mon, {"type": "setup_error", "layer": exc.layer, "message": str(exc)})
        os._exit(EXIT_SETUP)
    except BaseException as exc:
        _report(mon, {"type": "setup_error", "layer": "sandboxee",
                      "message": f"{type(exc).__name__}: {exc}"})
        os._exit(EXIT_SETUP)

    if spec["mode"] == "exec":
        os.set_inheritable(ctx.monitor_fd, False)
        argv = spec["argv"]
        path = argv[0]
        if "/" not in path:
            path = shutil.which(path, path=os.environ.get("PATH", "")) or path
        # Python ignores SIGPIPE and SIGXFSZ; an ignored disposition survives
        # exec, and a program must start with the defaults (as subprocess's
        # restore_signals does), or `yes | head` never ends.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execve(path, argv, os.environ)
        except OSError as exc:
            _report(mon, {"type": "exec_error", "message": f"{argv[0]}: {exc.strerror}",
                          "errno": exc.errno})
            os._exit(EXIT_EXEC)
    mon.close()
    from sandbox.sandboxee import worker
    os._exit(worker.run(ctx.ipc_fd))
