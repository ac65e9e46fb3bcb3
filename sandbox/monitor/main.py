"""An exec'd monitor: this module under ``python -I -S`` (Launcher(start="exec"); the
command line: sandbox.launcher.interp).

The CLI's one run: cheaper than starting and warming a fork server for it. It is
the same monitor host as the fork server's (sandbox.monitor.host), serving one
run: the run's descriptors are this process's 0, 1, 2 (the caller's stdio),
SANDBOX_MONITOR_FD (the control channel) and the IPC socket the spec names.
It ties its life to its parent (PDEATHSIG) and exits with the run's EXIT_*
code: whether the report went out (what happened to the sandbox is in the
report).
"""
from __future__ import annotations

import os
import signal
import sys

import prctl

from sandbox.monitor.host import (EXIT_FAILED, EXIT_NO_SPEC, EXIT_PARENT_GONE,  # noqa: F401
                                  EXIT_REPORTED, RunFds, serve_one)
from sandbox.monitor.stdio import take_process_stdio


def main() -> int:
    launcher_pid = int(os.environ.get("SANDBOX_LAUNCHER_PID", "0"))
    parent = os.getppid()
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent or (launcher_pid and parent != launcher_pid):
        return EXIT_PARENT_GONE
    return serve_one(RunFds(ipc=-1, ctl=int(os.environ["SANDBOX_MONITOR_FD"]),
                            stdio=list(take_process_stdio())))


if __name__ == "__main__":
    sys.exit(main())
