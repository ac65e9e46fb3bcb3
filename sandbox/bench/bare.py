"""The bare floor of a run: the launcher -> monitor host -> zygote -> fork+exec hops of
`Launcher.spawn`, with nothing else (issue 15: a missed target names "the same step in
C, or bare, in the same run").

A warm sandboxed run crosses three Python processes before its program starts: the
caller's launcher sends the run to its monitor host (a descriptor with SCM_RIGHTS), the
host asks its single-threaded zygote for a fork, and the host reports the end on the
run's own socket. This module does exactly those hops and only them: no policy, no
spec, no stub, no namespace, no mount, no audit, no history. Its program is
``/bin/true``, forked from the zygote (a Python process, as the real zygote is) and
exec'd at once. What a sandboxed run costs above this floor is containment and
bookkeeping; what this floor costs above bwrap is the Python processes themselves.

    with BareHost() as host:
        host.run()      # one round trip, blocking; thread-safe

``python -I -m sandbox.bench.bare`` is the host (started by `BareHost`).
"""
from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import threading
from types import TracebackType

PROGRAM = "/bin/true"


class BareHost:
    """A bare monitor host of the caller's (a fresh ``python -I`` process, as the fork
    server is): `run` is one round trip through it."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "sandbox.bench.bare", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env={})
        theirs.close()
        self._sock = mine
        self._lock = threading.Lock()

    def run(self) -> None:
        """One run: hand the host a fresh socket, wait for the program's end on it."""
        ours, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                socket.send_fds(self._sock, [b"run"], [host_end.fileno()])
            host_end.close()
            if ours.recv(64) != b"exited":
                raise RuntimeError("the bare host did not report the run")
        finally:
            ours.close()
            host_end.close()

    def close(self) -> None:
        self._sock.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> BareHost:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _zygote(sock: socket.socket) -> None:
    """Fork+exec the program for each request; send its pidfd back; reap. Never returns."""
    try:
        while True:
            try:
                data = sock.recv(16)
            except InterruptedError:
                continue
            if not data:
                break
            pid = os.fork()
            if pid == 0:
                try:
                    os.execv(PROGRAM, [PROGRAM])
                finally:
                    os._exit(127)
            pidfd = os.pidfd_open(pid)
            socket.send_fds(sock, [b"forked"], [pidfd])
            os.close(pidfd)
            while True:   # reap what has ended (its pidfd was readable before: it exited)
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
    finally:
        os._exit(0)


def serve(fd: int) -> int:
    """The host: one selectors loop over the launcher's socket, each run's pidfd."""
    launcher = socket.socket(fileno=fd)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    if os.fork() == 0:   # the zygote, forked while this process has one thread
        launcher.close()
        ours.close()
        _zygote(theirs)
    theirs.close()
    sel = selectors.DefaultSelector()
    zlock = threading.Lock()

    def exited(pidfd: int, run: socket.socket) -> None:
        sel.unregister(pidfd)
        os.close(pidfd)
        try:
            run.send(b"exited")
        except OSError:
            pass
        run.close()

    def request() -> bool:
        msg, fds, _, _ = socket.recv_fds(launcher, 16, 1)
        if not msg:
            return False
        run = socket.socket(fileno=fds[0])
        with zlock:
            ours.send(b"fork")
            _, pidfds, _, _ = socket.recv_fds(ours, 16, 1)
        pidfd = pidfds[0]
        sel.register(pidfd, selectors.EVENT_READ, lambda: exited(pidfd, run))
        return True

    open_ = [True]

    def on_launcher() -> None:
        if not request():
            open_[0] = False
            sel.unregister(launcher)
    sel.register(launcher, selectors.EVENT_READ, on_launcher)
    while open_[0] or len(sel.get_map()) > 0:
        for key, _ in sel.select():
            key.data()
    ours.close()
    os.wait()
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
