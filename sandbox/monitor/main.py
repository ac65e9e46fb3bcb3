"""The monitor process: one per sandbox, outside every restriction it imposes.

Started by the launcher (exec of ``python -I -m sandbox.monitor.main``, or a
fork of the warm fork server), it receives the run's spec on its control
socket, then:

1. ties its life to the launcher (PDEATHSIG) and becomes a child subreaper;
2. creates the run's cgroup, if the policy limits memory or processes and a
   writable hierarchy exists;
3. forks the stub, which enters the namespaces and forks PID 1 (the
   sandboxee), which applies the containment sequence;
4. supervises: wall-clock limit, cancellation from the launcher, the seccomp
   listener (violations; file audit), PID 1's exit;
5. reports one ``exit`` message to the launcher and cleans up.

Its stdout and stderr are the sandboxee's, so it never writes to them.
"""
from __future__ import annotations

import os
import signal
import sys

import prctl

from sandbox import protocol
from sandbox.ipc.channel import Channel
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan
from sandbox.protocol import ExitReport
# Imported here, before any fork, so PID 1 never reads them from inside its view.
from sandbox.sandboxee import entry, stub, worker  # noqa: F401


def build_context(spec: dict) -> ContainContext:
    return ContainContext(
        policy=Policy.from_dict(spec["policy"]),
        paths=RunPaths(**spec["paths"]),
        fs_plan=FsPlan.from_dict(spec["fs_plan"]),
        ipc_fd=spec["ipc_fd"],
        monitor_fd=-1,
        outer_uid=os.getuid(),
        outer_gid=os.getgid(),
        namespaces=spec.get("namespaces", True),
        audit_files=spec["policy"]["audit"]["files"],
    )


def use_ipc_fd(spec: dict, fd: int) -> None:
    """The IPC descriptor came through SCM_RIGHTS under a new number: say so to the
    containment sequence (spec["ipc_fd"]) and to the program (SANDBOX_IPC_FD)."""
    spec["ipc_fd"] = fd
    spec["env"]["SANDBOX_IPC_FD"] = str(fd)


def serve(ctl: Channel, ipc_fd: int | None = None, prestarted: object = None) -> int:
    from sandbox.monitor.supervisor import Supervisor
    msg = ctl.recv()
    if msg is None or msg.type != "spec":
        return 2
    spec = msg.payload
    if ipc_fd is not None:  # forked by the fork server: the descriptor arrived with a new number
        use_ipc_fd(spec, ipc_fd)
    sup = Supervisor(spec, build_context(spec), ctl, prestarted=prestarted)
    try:
        try:
            report = sup.run()
        except Exception as exc:  # report what we know rather than die silent
            sup.abort()
            report = sup.report
            report.monitor_error = f"{type(exc).__name__}: {exc}"
        # The sandbox is gone: let go of its stdout/stderr so a caller capturing
        # them sees end of stream now, then report, then clean up unhurried.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        send_exit(ctl, report)
        ctl.close()
    finally:
        sup.cleanup()
    return 0


def send_exit(ctl: Channel, report: ExitReport) -> None:
    """The exit report, bounded by construction (sandbox.protocol); if even that
    fails, a bare report that still carries PID 1's status."""
    try:
        payload = protocol.to_obj(report)
    except Exception as exc:
        payload = protocol.to_obj(ExitReport(status=report.status, timed_out=report.timed_out,
                                             cancelled=report.cancelled,
                                             monitor_error=f"report: {exc}"))
    try:
        ctl.send("exit", payload)
    except OSError:
        pass  # the launcher is gone


def run_monitor(ctl_fd: int, *, ipc_fd: int | None = None, launcher_pid: int = 0) -> int:
    """The monitor's life, whether exec'd by the launcher or forked by the fork server."""
    parent = os.getppid()
    prctl.set_pdeathsig(signal.SIGKILL)
    # ^C and ^\ at the caller's terminal reach its whole process group, this process
    # included: they are the program's (the launcher relays them), not the monitor's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    # A caller in the background (`sandbox exec ... &`) must not be stopped because
    # the stdin relay reads its terminal: the read fails (EIO), the program sees EOF.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    if os.getppid() != parent or (launcher_pid and parent == 1):
        return 3  # our parent died before we could tie our life to it
    prctl.set_child_subreaper(1)
    return serve(Channel(ctl_fd, max_frame=protocol.EXIT_REPORT_MAX), ipc_fd)


def main() -> int:
    launcher_pid = int(os.environ.get("SANDBOX_LAUNCHER_PID", "0"))
    if launcher_pid and os.getppid() != launcher_pid:
        return 3
    return run_monitor(int(os.environ["SANDBOX_MONITOR_FD"]), launcher_pid=launcher_pid)


if __name__ == "__main__":
    sys.exit(main())
