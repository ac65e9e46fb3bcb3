"""The fork server: the launcher's monitor host, started once per Launcher.

``python -I -m sandbox.forkserver`` is started by exec (a small, fresh
process: fork cost grows with resident memory), with an explicit environment
(`launcher.interp.monitor_env`). It imports the package's trusted runtime
(`sandbox.monitor.host.PRELOAD`; never user action code: that is imported in
the sandboxee, after containment), pre-compiles the built-in policies'
seccomp programs, freezes the garbage collector's view of those objects (so
forks do not copy pages merely by collecting), forks its zygote, and then
supervises every run the launcher sends, in this one process:

    launcher --(SOCK_SEQPACKET: SpawnRequest + ipc, ctl, stdin, stdout, stderr, exit)--> server
    server   --(Spawned(pid), or Refused(error))--> launcher
    server   --(MonitorExited(status), when the run's supervision ended)--> its exit socket

(typed messages of sandbox.protocol). There is no PDEATHSIG here: it fires when
the parent *thread* exits, and the launcher may start the server from a
short-lived worker thread. The socket is the lifeline instead: when the
launcher process is gone, its end closes, and the server ends its zygote,
with every stub and sandbox.
"""
from __future__ import annotations

import os
import socket
import sys

from sandbox.monitor.host import PRELOAD, serve_launcher  # noqa: F401


def main() -> int:
    launcher_pid = int(os.environ.get("SANDBOX_LAUNCHER_PID", "0"))
    if launcher_pid and os.getppid() != launcher_pid:
        return 3   # the launcher is gone already: nobody to serve
    sock = socket.socket(fileno=int(os.environ["SANDBOX_FORKSERVER_FD"]))
    return serve_launcher(sock, spares=os.environ.get("SANDBOX_SPARE", "1") != "0")


if __name__ == "__main__":
    sys.exit(main())
