"""The fork server: a warm, single-threaded template that forks one monitor per run.

Starting a monitor by exec costs a Python start-up, the imports of the
runtime and the compilation of the seccomp filter: tens of milliseconds. The
fork server pays that once per launcher. It is started by exec (so it is a
small, fresh process: fork cost grows with resident memory), imports only
this package's trusted runtime (never user action code: that is imported in
the sandboxee, after containment), pre-compiles the filters of the built-in
policies, freezes the garbage collector's view of those objects (so children
do not copy pages just by collecting), and then serves requests:

    launcher --(SOCK_SEQPACKET: SpawnRequest + fds: ipc, ctl, stdin, stdout, stderr)--> server
    server   --(Spawned(pid) + a pidfd of the new monitor, or Refused(error))--> launcher

(typed messages of sandbox.protocol). The forked child becomes the run's
monitor through the one function every monitor starts with
(`sandbox.monitor.main.run`). The server never
runs threads, so forking it is safe; its children are reaped by the kernel
(SIGCHLD ignored) and the launcher watches each monitor through its pidfd.
The server ends when the launcher's end of its socket closes, and every
monitor dies with the server.
"""
from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.protocol import Refused, Spawned, SpawnRequest

# The one preload list: everything a monitor, a stub and PID 1 run, imported once here
# before any fork (never user action code: that is imported in the sandboxee).
PRELOAD = (
    "sandbox.monitor.main", "sandbox.monitor.supervisor", "sandbox.monitor.spare",
    "sandbox.sandboxee.entry", "sandbox.sandboxee.stub", "sandbox.sandboxee.worker",
    # the audit side of the monitor, so a run with [audit] pays no import for it
    "sandbox.audit.store", "sandbox.monitor.broker", "sandbox.monitor.notify_loop",
)


def _warm() -> None:
    """Import the preload list; compile the seccomp programs of the built-in policies,
    so runs only look them up; probe cgroups once, so runs do not each make and remove
    a probe cgroup."""
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    try:
        from sandbox.monitor import cgroups
        cgroups.probe_cached()
    except Exception:
        pass
    try:
        from sandbox.isolation import seccomp
        from sandbox.policy import load_policy
        for name in ("default", "strict"):
            pol = load_policy(name)
            for audit in ("none", "denied", "all"):
                seccomp.warm(pol.syscalls, audit)
    except Exception:
        pass  # a cold cache is slower, never wrong


class _Spare:
    """The fork server's end of a spare monitor (see sandbox.monitor.spare)."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.sock = pid, pidfd, sock

    def alive(self) -> bool:
        return not select.select([self.pidfd], [], [], 0)[0]

    def close(self) -> None:
        self.sock.close()
        os.close(self.pidfd)


def _fork_monitor(fds: list[int] | None, launcher_sock: socket.socket, launcher_pid: int,
                  sp: _Spare | None) -> tuple[int, int, socket.socket | None]:
    """Fork a monitor: for this run's `fds`, or (None) a spare that takes them later on
    the returned socket. Returns its pid, its pidfd and that socket."""
    from sandbox.monitor import main as monitor_main
    mine = theirs = None
    if fds is None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            launcher_sock.close()
            if sp is not None:
                sp.sock.close()
            if mine is not None:
                mine.close()
            monitor_main.forked(fds, launcher_pid, handover=theirs)   # never returns
        finally:
            os._exit(monitor_main.EXIT_FAILED)
    if theirs is not None:
        theirs.close()
    return pid, os.pidfd_open(pid), mine


def _make_spare(launcher_sock: socket.socket, launcher_pid: int) -> _Spare | None:
    pid, pidfd, mine = _fork_monitor(None, launcher_sock, launcher_pid, None)
    assert mine is not None
    return _Spare(pid, pidfd, mine)


def _hand_to_spare(sp: _Spare | None, fds: list[int]) -> bool:
    if sp is None or not sp.alive():
        return False
    try:
        protocol.send(sp.sock, SpawnRequest(), fds)
    except OSError:
        return False
    return True


def serve(sock: socket.socket, launcher_pid: int) -> int:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished monitors
    # In the caller's process group: a ^C at its terminal is for the launcher to relay.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    _warm()
    gc.collect()
    gc.freeze()
    spares = os.environ.get("SANDBOX_SPARE", "1") != "0"
    sp = _make_spare(sock, launcher_pid) if spares else None
    while True:
        try:
            request, fds = protocol.recv(sock, SpawnRequest)
        except InterruptedError:
            continue
        except ProtocolError as exc:
            sock.send(protocol.to_datagram(Refused(f"bad request: {exc}"[:1000])))
            continue
        if request is None:
            if sp is not None:  # let the spare free its cgroups before our exit kills it
                sp.sock.close()
                select.select([sp.pidfd], [], [], 2.0)
            return 0
        used = None
        try:
            if len(fds) != 5:
                raise ValueError(f"a run needs 5 descriptors, got {len(fds)}")
            if _hand_to_spare(sp, fds):
                used, pid, pidfd = sp, sp.pid, os.dup(sp.pidfd)  # type: ignore[union-attr]
            else:
                pid, pidfd, _ = _fork_monitor(fds, sock, launcher_pid, sp)
            try:
                protocol.send(sock, Spawned(pid), [pidfd])
            finally:
                os.close(pidfd)
        except (ValueError, OSError) as exc:
            protocol.send(sock, Refused(f"{type(exc).__name__}: {exc}"[:1000]))
        finally:
            for fd in fds:
                os.close(fd)
        if spares and (used is not None or sp is None or not sp.alive()):
            if sp is not None:
                sp.close()
            sp = _make_spare(sock, launcher_pid)  # the next run's, made while this one runs


def main() -> int:
    # No PDEATHSIG here: it fires when the parent *thread* exits, and the
    # launcher may start this server from a short-lived worker thread. The
    # socket is the lifeline instead: when the launcher process is gone, its
    # end closes, recv returns end-of-stream and the server exits, and every
    # monitor it forked dies with it (their PDEATHSIG points here).
    launcher_pid = int(os.environ.get("SANDBOX_LAUNCHER_PID", "0"))
    if launcher_pid and os.getppid() != launcher_pid:
        return 3
    sock = socket.socket(fileno=int(os.environ["SANDBOX_FORKSERVER_FD"]))
    return serve(sock, launcher_pid)


if __name__ == "__main__":
    sys.exit(main())
