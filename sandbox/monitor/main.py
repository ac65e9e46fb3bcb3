"""The monitor process: one per sandbox, outside every restriction it imposes.

However it starts (forked by the warm fork server, as that server's spare, or
exec'd as ``python -I -m sandbox.monitor.main``), it becomes the monitor
through one function, `run`:

1. ties its life to its parent (PDEATHSIG); the run's stub, not the monitor, is
   the run's child subreaper (sandbox/sandboxee/stub.py);
2. (a spare) forks its stub ahead of the run (sandbox.monitor.spare) and waits
   for the run's descriptors;
3. receives the run's `Spec` on its control socket;
4. creates the run's cgroup, forks the stub, which enters the namespaces and
   forks PID 1, which applies the containment sequence (supervisor.py);
5. supervises: wall-clock limit, cancellation from the launcher, the seccomp
   listener (violations; file audit), PID 1's exit;
6. reports one `ExitReport` to the launcher and cleans up.

Its stdout and stderr are the sandboxee's, so it never writes to them. Its
own exit status says only whether it reported (`EXIT_*`); what happened to the
sandbox is in the report.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass

import prctl

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.ipc.channel import Channel
from sandbox.isolation.libc import adopt_stdio
from sandbox.monitor import runspec, spare
from sandbox.monitor.supervisor import Supervisor
from sandbox.protocol import ExitReport, Spec, SpawnRequest
# Imported here, before any fork, so PID 1 never reads them from inside its view.
from sandbox.sandboxee import entry, stub, worker  # noqa: F401

# The monitor's own exit status (the launcher sees it through the fork server).
EXIT_REPORTED = 0       # the report went out (or the launcher was gone to take it)
EXIT_NO_SPEC = 2        # the control channel closed or sent no spec: nothing ran
EXIT_PARENT_GONE = 3    # the parent died before the monitor could tie its life to it
EXIT_FAILED = 4         # the monitor itself failed before it could report


@dataclass
class RunFds:
    """The run's descriptors as the launcher hands them over: the IPC socket's sandbox
    end, the control socket, and the sandbox's stdin, stdout, stderr (None: the
    monitor's own 0, 1, 2, as an exec'd monitor got them)."""
    ipc: int
    ctl: int
    stdio: tuple[int, int, int] | None = None
    renumbered: bool = True     # ipc arrived under a number the spec does not know

    @classmethod
    def received(cls, fds: list[int]) -> "RunFds":
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(f"a run needs 5 descriptors, got {len(fds)}")
        return cls(fds[0], fds[1], (fds[2], fds[3], fds[4]))


def _tie_to_parent(launcher_pid: int) -> bool:
    parent = os.getppid()
    prctl.set_pdeathsig(signal.SIGKILL)
    # ^C and ^\\ at the caller's terminal reach its whole process group, this process
    # included: they are the program's (the launcher relays them), not the monitor's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    # A caller in the background (`sandbox exec ... &`) must not be stopped because
    # the stdin relay reads its terminal: the read fails (EIO), the program sees EOF.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # the fork server ignores it
    if os.getppid() != parent or (launcher_pid and parent == 1):
        return False
    return True


def run(fds: RunFds | None, *, launcher_pid: int = 0,
        handover: socket.socket | None = None) -> int:
    """Become the monitor of one run; the exit status (EXIT_*). `fds` are the run's
    descriptors, or None for a spare: it prestarts a stub, then takes them from
    `handover` (the fork server's SpawnRequest)."""
    if not _tie_to_parent(launcher_pid):
        return EXIT_PARENT_GONE
    pre = None
    if fds is None:
        assert handover is not None
        pre = spare.prestart()
        try:
            msg, got = protocol.recv(handover, SpawnRequest)
            fds = None if msg is None else RunFds.received(got)
        finally:
            handover.close()
        if fds is None:
            pre.discard()
            return EXIT_NO_SPEC
    if fds.stdio is not None:
        adopt_stdio(*fds.stdio)
    if fds.ipc >= 0:
        os.set_inheritable(fds.ipc, True)
    return serve(Channel(fds.ctl, max_frame=protocol.SPEC_MAX),
                 fds.ipc if fds.renumbered else None, pre)


def serve(ctl: Channel, ipc_fd: int | None = None,
          prestarted: spare.Prestarted | None = None) -> int:
    msg = ctl.recv()
    if msg is None:
        return EXIT_NO_SPEC
    spec = protocol.parse(msg.type, msg.payload, Spec)
    if ipc_fd is not None:  # handed over: the descriptor arrived with a new number
        runspec.use_ipc_fd(spec, ipc_fd)
    sup = Supervisor(spec, runspec.build_context(spec), ctl, prestarted=prestarted)
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
    return EXIT_REPORTED


def send_exit(ctl: Channel, report: ExitReport) -> None:
    """The exit report, bounded by construction (sandbox.protocol); if even that
    fails, a bare report that still carries PID 1's status."""
    try:
        frame = protocol.to_frame(report, protocol.EXIT_REPORT_MAX)
    except Exception as exc:
        frame = protocol.to_frame(ExitReport(status=report.status, timed_out=report.timed_out,
                                             cancelled=report.cancelled,
                                             monitor_error=f"report: {exc}"),
                                  protocol.EXIT_REPORT_MAX)
    try:
        ctl.sock.sendall(frame)
    except OSError:
        pass  # the launcher is gone


def forked(fds: list[int] | None, launcher_pid: int,
           handover: socket.socket | None = None) -> None:
    """In a child of the fork server: `run` with the run's five descriptors (or as a
    spare, None and the `handover` socket), then exit with its status. Never returns."""
    code = EXIT_FAILED
    try:
        code = run(None if fds is None else RunFds.received(fds), launcher_pid=launcher_pid,
                   handover=handover)
    except BaseException:
        code = EXIT_FAILED
    finally:
        os._exit(code)


def main() -> int:
    """``python -I -m sandbox.monitor.main`` (Launcher(start="exec")): the run's
    descriptors are this process's 0, 1, 2, SANDBOX_IPC_FD and SANDBOX_MONITOR_FD."""
    launcher_pid = int(os.environ.get("SANDBOX_LAUNCHER_PID", "0"))
    if launcher_pid and os.getppid() != launcher_pid:
        return EXIT_PARENT_GONE
    return run(RunFds(ipc=-1, ctl=int(os.environ["SANDBOX_MONITOR_FD"]), renumbered=False),
               launcher_pid=launcher_pid)


if __name__ == "__main__":
    sys.exit(main())
