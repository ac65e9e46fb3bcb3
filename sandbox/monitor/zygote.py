"""The zygote: the single-threaded process that forks every stub.

The monitor host drives every sandbox from one process, with a few shared
threads (relays, notifications, the end of runs). A multi-threaded process
must not fork code that goes on running Python: a lock another thread held
at the fork stays held in the child forever. So the host forks this process
once, first, while it still has one thread, and asks it for each stub:

    host   --(ForkStub + the stub's status, setup and go socket ends)--> zygote
    zygote --(Forked(pid) + the stub's pidfd)--> host

The zygote has the warm runtime the host imported (a stub, PID 1 and a Python
action are forks of it, so they share its pages), runs no thread, holds no
run's state, and reaps the stubs (it is their parent; the pidfd it opens before
replying names the stub even after it is reaped). It is a child subreaper, so
an orphan that escaped a run without a PID namespace is reaped here, not
left a zombie. It dies with the host (PDEATHSIG; the host's main thread, which
forked it, lives as long as the host), and every stub dies with it.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import threading
from typing import Callable

import prctl

from sandbox import _native, protocol
from sandbox.errors import ProtocolError
from sandbox.protocol import ForkStub, Forked, Refused, Spec

STUB_FDS = 3   # the stub's ends of its status, setup and go sockets


class Zygote:
    """The host's handle on its zygote: `fork_stub` is one round trip (the fork, a
    pidfd_open and a datagram), safe to call from any thread."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> "Zygote":
        """Fork the zygote. Call while this process has one thread."""
        assert threading.active_count() == 1, "the zygote must be forked before any thread"
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:   # pragma: no cover - runs in the zygote
            code = 1
            try:
                mine.close()
                code = _serve(theirs)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, mine)

    def fork_stub(self, req: ForkStub, fds: list[int]) -> tuple[int, int]:
        """A new stub: its pid and pidfd. `fds` (status, setup, go: the stub's ends)
        stay the caller's to close."""
        with self._lock:
            protocol.send(self.sock, req, fds)
            reply, got = protocol.recv(self.sock, Forked, Refused, max_fds=1)
        if reply is None:
            raise OSError("the zygote is gone")
        if not isinstance(reply, Forked) or len(got) != 1:
            for fd in got:
                os.close(fd)
            raise OSError(f"zygote: {getattr(reply, 'error', 'no pidfd')}")
        return reply.pid, got[0]

    def close(self) -> None:
        """End of stream: the zygote exits, and every stub it forked with it."""
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(sock: socket.socket) -> int:
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() == 1:
        return 0
    prctl.set_child_subreaper(1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    children: dict[int, int] = {}   # pidfd -> pid
    while True:
        ready, _, _ = select.select([sock.fileno(), *children], [], [])
        for fd in ready:
            if fd in children:
                _reap(fd, children)
        _reap_orphans(children)
        if sock.fileno() not in ready:
            continue
        try:
            req, fds = protocol.recv(sock, ForkStub, max_fds=STUB_FDS)
        except ProtocolError as exc:
            protocol.send(sock, Refused(f"bad request: {exc}"[:1000]))
            continue
        if req is None:
            return 0
        for fd in fds:   # received descriptors are inheritable: the program must not get them
            os.set_inheritable(fd, False)
        try:
            if len(fds) != STUB_FDS:
                raise ValueError(f"a stub needs {STUB_FDS} descriptors, got {len(fds)}")
            pid = _fork(req, fds, sock, children)
            pidfd = os.pidfd_open(pid)
            children[os.pidfd_open(pid)] = pid
            try:
                protocol.send(sock, Forked(pid), [pidfd])
            finally:
                os.close(pidfd)
        except (ValueError, OSError) as exc:
            protocol.send(sock, Refused(f"{type(exc).__name__}: {exc}"[:1000]))
        finally:
            for fd in fds:
                os.close(fd)


def _fork(req: ForkStub, fds: list[int], sock: socket.socket,
          children: dict[int, int]) -> int:
    from sandbox.monitor import stubs
    from sandbox.sandboxee import stub
    pid = os.fork()
    if pid == 0:   # pragma: no cover - runs in the stub
        try:
            sock.close()
            for fd in children:
                os.close(fd)
            status = socket.socket(fileno=fds[0])
            go = socket.socket(fileno=fds[2])
            start: Callable[[Spec, list[int]], Callable[[], object]] = stubs.start_pid1(fds[1])
            stub.run_waiting(status, go, req, start, _native.INIT_PATH)
        finally:
            os._exit(1)
    return pid


def _reap(pidfd: int, children: dict[int, int]) -> None:
    try:
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        pass
    children.pop(pidfd, None)
    os.close(pidfd)


def _reap_orphans(children: dict[int, int]) -> None:
    """Orphans re-parented here (subreaper) that are no stub of ours: reap them."""
    mine = set(children.values())
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in mine:
            return
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            return
