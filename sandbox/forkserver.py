"""The fork server: a warm, single-threaded template that forks one monitor per run.

Starting a monitor by exec costs a Python start-up, the imports of the
runtime and the compilation of the seccomp filter: tens of milliseconds. The
fork server pays that once per launcher. It is started by exec (so it is a
small, fresh process: fork cost grows with resident memory), imports only
this package's trusted runtime (never user action code: that is imported in
the sandboxee, after containment), pre-compiles the filters of the built-in
policies, freezes the garbage collector's view of those objects (so children
do not copy pages just by collecting), and then serves requests:

    launcher --(SOCK_SEQPACKET: SpawnRequest + fds: ipc, ctl, stdin, stdout, stderr, exit)--> server
    server   --(Spawned(pid) + a pidfd of the new monitor, or Refused(error))--> launcher
    server   --(MonitorExited(status), when the monitor has ended)--> the run's exit socket

(typed messages of sandbox.protocol). The forked child becomes the run's
monitor through the one function every monitor starts with
(`sandbox.monitor.main.run`). The server never
runs threads, so forking it is safe; it reaps each monitor through its pidfd
and sends the real wait status to the launcher.
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
from sandbox.protocol import MonitorExited, Refused, Spawned, SpawnRequest

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
    """The fork server's end of a spare monitor (see sandbox.monitor.spare). Its pidfd
    belongs to `_Children`, which reaps it."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.sock = pid, pidfd, sock
        self.dead = False

    def alive(self) -> bool:
        return not self.dead and not select.select([self.pidfd], [], [], 0)[0]

    def close(self) -> None:
        self.sock.close()


def _wait_status(info: os.waitid_result) -> int:
    """waitid's answer as the raw status waitpid would have given."""
    if info.si_code == os.CLD_EXITED:
        return (info.si_status & 0xFF) << 8
    return (info.si_status & 0x7F) | (0x80 if info.si_code == os.CLD_DUMPED else 0)


class _Children:
    """Every monitor this server forked, by its pidfd. When one ends, the server reaps
    it (waitid on the pidfd: never a recycled pid) and sends its real wait status,
    `MonitorExited`, on the launcher's exit socket for that run."""

    def __init__(self) -> None:
        self.by_fd: dict[int, tuple[int, socket.socket | None]] = {}

    def add(self, pid: int, pidfd: int, exit_sock: socket.socket | None = None) -> None:
        self.by_fd[pidfd] = (pid, exit_sock)

    def attach(self, pidfd: int, exit_sock: socket.socket) -> None:
        pid, _ = self.by_fd[pidfd]
        self.by_fd[pidfd] = (pid, exit_sock)

    def reap(self, pidfd: int, sp: _Spare | None) -> None:
        try:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            info = None
        if info is None:
            return
        _, exit_sock = self.by_fd.pop(pidfd)
        if sp is not None and sp.pidfd == pidfd:
            sp.dead = True
        if exit_sock is not None:
            try:
                protocol.send(exit_sock, MonitorExited(_wait_status(info)))
            except OSError:
                pass   # that run's launcher side is gone
            exit_sock.close()
        os.close(pidfd)


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


def _make_spare(launcher_sock: socket.socket, launcher_pid: int,
                children: _Children) -> _Spare:
    pid, pidfd, mine = _fork_monitor(None, launcher_sock, launcher_pid, None)
    assert mine is not None
    children.add(pid, pidfd)
    return _Spare(pid, pidfd, mine)


def _hand_to_spare(sp: _Spare | None, fds: list[int]) -> bool:
    if sp is None or not sp.alive():
        return False
    try:
        protocol.send(sp.sock, SpawnRequest(), fds)
    except OSError:
        return False
    return True


RUN_FDS = 6   # ipc, control, stdin, stdout, stderr (the monitor's), the exit socket (ours)


def serve(sock: socket.socket, launcher_pid: int) -> int:
    # In the caller's process group: a ^C at its terminal is for the launcher to relay.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    _warm()
    gc.collect()
    gc.freeze()
    children = _Children()
    spares = os.environ.get("SANDBOX_SPARE", "1") != "0"
    sp = _make_spare(sock, launcher_pid, children) if spares else None
    while True:
        ready, _, _ = select.select([sock.fileno(), *children.by_fd], [], [])
        for fd in ready:
            if fd != sock.fileno():
                children.reap(fd, sp)
        if sock.fileno() not in ready:
            continue
        try:
            request, fds = protocol.recv(sock, SpawnRequest)
        except InterruptedError:
            continue
        except ProtocolError as exc:
            sock.send(protocol.to_datagram(Refused(f"bad request: {exc}"[:1000])))
            continue
        if request is None:
            if sp is not None and sp.alive():  # let the spare free its cgroups first
                sp.sock.close()
                select.select([sp.pidfd], [], [], 2.0)
            return 0
        used = None
        exit_sock = None
        try:
            if len(fds) != RUN_FDS:
                raise ValueError(f"a run needs {RUN_FDS} descriptors, got {len(fds)}")
            exit_sock = socket.socket(fileno=fds.pop())
            if _hand_to_spare(sp, fds):
                assert sp is not None
                used, pid, pidfd = sp, sp.pid, sp.pidfd
            else:
                pid, pidfd, _ = _fork_monitor(fds, sock, launcher_pid, sp)
                children.add(pid, pidfd)
            children.attach(pidfd, exit_sock)
            exit_sock = None
            protocol.send(sock, Spawned(pid), [pidfd])
        except (ValueError, OSError) as exc:
            protocol.send(sock, Refused(f"{type(exc).__name__}: {exc}"[:1000]))
        finally:
            if exit_sock is not None:
                exit_sock.close()
            for fd in fds:
                os.close(fd)
        if spares and (used is not None or sp is None or not sp.alive()):
            if sp is not None:
                sp.close()
            sp = _make_spare(sock, launcher_pid, children)  # the next run's


def main() -> int:
    # No PDEATHSIG here: it fires when the parent *thread* exits, and the
    # launcher may start this server from a short-lived worker thread. The
    # socket is the lifeline instead: when the launcher process is gone, its
    # end closes, recv returns end-of-stream and the server exits, and every
    # monitor it forked dies with it (their PDEATHSIG points here).
    launcher_pid = int(os.environ.get("SANDBOX_LAUNCHER_PID", "0"))
    if launcher_pid and os.getppid() != launcher_pid:
        return 3   # the launcher is gone already: nobody to serve
    sock = socket.socket(fileno=int(os.environ["SANDBOX_FORKSERVER_FD"]))
    return serve(sock, launcher_pid)


if __name__ == "__main__":
    sys.exit(main())
