"""The fork server: a warm, single-threaded template that forks one monitor per run.

Starting a monitor by exec costs a Python start-up, the imports of the
runtime and the compilation of the seccomp filter: tens of milliseconds. The
fork server pays that once per launcher. It is started by exec (so it is a
small, fresh process: fork cost grows with resident memory), imports only
this package's trusted runtime (never user action code: that is imported in
the sandboxee, after containment), pre-compiles the filters of the built-in
policies, freezes the garbage collector's view of those objects (so children
do not copy pages just by collecting), and then serves requests:

    launcher --(SOCK_SEQPACKET: {"op": "spawn"} + fds: ipc, ctl, stdin, stdout, stderr)--> server
    server   --({"pid": N} + a pidfd of the new monitor)--> launcher

The forked child becomes the run's monitor (`sandbox.monitor.main.serve`) and
applies exactly the same containment path as an exec'd one. The server never
runs threads, so forking it is safe; its children are reaped by the kernel
(SIGCHLD ignored) and the launcher watches each monitor through its pidfd.
The server ends when the launcher's end of its socket closes, and every
monitor dies with the server.
"""
from __future__ import annotations

import gc
import json
import os
import select
import signal
import socket
import sys

# The runtime, imported before any fork.
from sandbox.isolation.libc import adopt_stdio
from sandbox.monitor import main as monitor_main
from sandbox.monitor import supervisor  # noqa: F401
# The audit side of the monitor, so a run with [audit] pays no import for it.
from sandbox.audit import store as _audit_store  # noqa: F401
from sandbox.monitor import broker, notify_loop, spare  # noqa: F401

MAX_FDS = 8


def _warm() -> None:
    """Compile the seccomp programs of the built-in policies, so runs only look them up;
    probe cgroups once, so runs do not each make and remove a probe cgroup."""
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


def _child(fds: list[int], launcher_pid: int) -> None:
    """In the forked child: become the monitor of one run. Never returns."""
    code = 70
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        ipc_fd, ctl_fd = fds[:2]
        adopt_stdio(*fds[2:5])
        os.set_inheritable(ipc_fd, True)
        code = monitor_main.run_monitor(ctl_fd, ipc_fd=ipc_fd, launcher_pid=launcher_pid)
    except BaseException:
        code = 71
    finally:
        os._exit(code)


class _Spare:
    """The fork server's end of a spare monitor (see sandbox.monitor.spare)."""

    def __init__(self, pid: int, pidfd: int, sock: socket.socket) -> None:
        self.pid, self.pidfd, self.sock = pid, pidfd, sock

    def alive(self) -> bool:
        return not select.select([self.pidfd], [], [], 0)[0]

    def close(self) -> None:
        self.sock.close()
        os.close(self.pidfd)


def _make_spare(launcher_sock: socket.socket, launcher_pid: int) -> _Spare | None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            launcher_sock.close()
            mine.close()
            code = spare.serve(theirs, launcher_pid)
        except BaseException:
            code = 71
        finally:
            os._exit(code)
    theirs.close()
    return _Spare(pid, os.pidfd_open(pid), mine)


def _hand_to_spare(sp: _Spare | None, fds: list[int]) -> bool:
    if sp is None or not sp.alive():
        return False
    try:
        socket.send_fds(sp.sock, [b'{"op": "run"}'], fds)
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
            data, fds, _, _ = socket.recv_fds(sock, 4096, MAX_FDS)
        except InterruptedError:
            continue
        if not data:
            if sp is not None:  # let the spare free its cgroups before our exit kills it
                sp.sock.close()
                select.select([sp.pidfd], [], [], 2.0)
            return 0
        used = None
        try:
            request = json.loads(data)
            if request.get("op") != "spawn" or len(fds) != 5:
                raise ValueError(f"bad request {request!r} with {len(fds)} descriptors")
            if _hand_to_spare(sp, fds):
                used, pid, pidfd = sp, sp.pid, os.dup(sp.pidfd)
            else:
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    if sp is not None:
                        sp.sock.close()
                    _child(fds, launcher_pid)
                pidfd = os.pidfd_open(pid)
            try:
                socket.send_fds(sock, [json.dumps({"pid": pid}).encode()], [pidfd])
            finally:
                os.close(pidfd)
        except (ValueError, OSError) as exc:
            sock.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
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
