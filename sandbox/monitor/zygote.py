"""The zygote: the single-threaded process that forks every stub.

The monitor host drives every sandbox from one process, with a few shared
threads (relays, notifications, the end of runs). A multi-threaded process
must not fork code that goes on running Python: a lock another thread held
at the fork stays held in the child forever. So the host forks this process
once, first, while it still has one thread, and asks it for each stub:

    host   --(ForkStub + the stub's status, setup and go socket ends)--> zygote
    zygote --(Forked(pid) + the stub's pidfd, or Refused(error))--> host

The zygote has the warm runtime the host imported (a stub, PID 1 and a Python
action are forks of it, so they share its pages), runs no thread, holds no
run's state, and reaps the stubs (it is their parent, and holds a pidfd of
each; the stub's own pidfd, sent before it could be reaped, never names a
recycled pid). It is a child subreaper, so an orphan that escaped a run
without a PID namespace is reaped here, not left a zombie. It dies with the
host (PDEATHSIG; the host's main thread, which forked it, lives as long as
the host), and every stub dies with it.

Its loop is kept small on purpose: every page the zygote writes while a stub
lives is copied then, and the stub keeps the old one as its own, as does its
sandbox's PID 2 (a Python action). One iteration of a loop that decoded the
request and encoded the answer with the typed codec made ~1.2 MiB of a child
private. So the zygote takes the request raw and hands it to the compiled stub
(sandbox/sandboxee/stub_fork.py), which starts the stub and answers the host in
C (`Forked` with the stub's pidfd, formatted as `protocol.forked_datagram`);
without the library it forks the Python stub at once
(`forking.fork_single_threaded`: no at-fork hooks either), which decodes the
request (`_stub`), and answers the same way in Python. The answer is the
zygote's, not the child's: a child killed right after it started (the OOM
killer) must still leave the host one answer, or the host's `fork_stub` would
wait for ever; the host then sees a stub that ended before `StubReady`.

A zygote can still die (killed, or by the OOM killer); its stubs die with it
(PDEATHSIG), and so does every sandbox they started. The host then needs a
new one, but by then it runs threads and must not fork Python: `Zygotes`
(the host's handle, what every stub is asked of) starts the replacement by
fork+exec, ``python -I -m sandbox.monitor.zygote``, which warms the same
runtime as the host did (sandbox.monitor.preload) before serving. It costs a
fresh interpreter's start and import (docs/architecture.md, "When the zygote
dies"), and its pages are its own, no longer shared with the host.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Callable

import prctl

from sandbox import _native, protocol
from sandbox import fdwait, group_signals
from sandbox.errors import ZygoteGone
from sandbox.protocol import ForkStub, Forked, Refused, Spec
from sandbox.sandboxee import forking, template

STUB_FDS = 3   # the stub's ends of its status, setup and go sockets
COMMAND = [sys.executable, "-I", "-m", "sandbox.monitor.zygote"]
DEATHS_KEPT = 16   # past zygotes whose death a late stub's run may still ask about
# What the monitor host, its zygotes, stubs and pooled PID 1s ignore: every signal the
# caller may send its whole process group, where they sit, which the launcher relays to
# the program once (sandbox.group_signals). Each sandbox's init and program start with
# the caller's dispositions instead (init.c, entry._program). The monitor's life is its
# launcher's: it ends when the launcher's socket closes, and SIGKILL still ends it.
GROUP_SIGNALS = group_signals.IGNORED_BY_HELPERS


def ignore_group_signals() -> None:
    """GROUP_SIGNALS ignored: by the host, and by a zygote started to replace one."""
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class Zygote:
    """One zygote process: `fork_stub` is one round trip (the fork, a pidfd_open and a
    datagram), safe to call from any thread. `pidfd` becomes readable when it dies."""

    def __init__(self, pid: int, sock: socket.socket,
                 proc: "subprocess.Popen[bytes] | None" = None) -> None:
        self.pid, self.sock, self._proc = pid, sock, proc
        self.pidfd = os.pidfd_open(pid)   # our unreaped child: never a recycled pid
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

    @classmethod
    def spawn(cls, *, warm: bool = True) -> "Zygote":
        """Start a zygote by fork+exec (safe in a process with threads: nothing but C
        runs between the fork and the exec). Its parent is the calling thread, whose
        end fires its PDEATHSIG: call from a thread that lives as long as the host."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "SANDBOX_ZYGOTE_FD": str(theirs.fileno()),
               "SANDBOX_ZYGOTE_PARENT": str(os.getpid()),
               "SANDBOX_ZYGOTE_WARM": "1" if warm else "0"}
        try:
            proc = subprocess.Popen(COMMAND, env=env, stdin=subprocess.DEVNULL,
                                    pass_fds=(theirs.fileno(),))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return cls(proc.pid, mine, proc)

    def fork_stub(self, req: ForkStub, fds: list[int]) -> tuple[int, int]:
        """A new stub: its pid and pidfd. `fds` (status, setup, go: the stub's ends)
        stay the caller's to close. ZygoteGone: this zygote is dead."""
        with self._lock:
            try:
                protocol.send(self.sock, req, fds)
                reply, got = protocol.recv(self.sock, Forked, Refused, max_fds=1)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ZygoteGone(f"the zygote (pid {self.pid}) is gone: {exc}") from None
        if reply is None:
            raise ZygoteGone(f"the zygote (pid {self.pid}) is gone")
        if not isinstance(reply, Forked) or len(got) != 1:
            for fd in got:
                os.close(fd)
            raise OSError(f"zygote: {getattr(reply, 'error', 'no pidfd')}")
        return reply.pid, got[0]

    def death(self) -> str | None:
        """None while it lives; else how it died (it stays unreaped until `close`)."""
        if not fdwait.readable([self.pidfd], 0):
            return None
        how = "ended"
        try:
            info = os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except OSError:
            info = None
        if info is not None and info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            try:
                how = f"was killed by {signal.Signals(info.si_status).name}"
            except ValueError:
                how = f"was killed by signal {info.si_status}"
        elif info is not None:
            how = f"exited with status {info.si_status}"
        return (f"the zygote (pid {self.pid}) {how}: every stub it forked, and the sandbox "
                "of each, died with it")

    def close(self) -> None:
        """End of stream: the zygote exits, and every stub it forked with it."""
        self.sock.close()
        try:
            if self._proc is not None:
                self._proc.wait()
            else:
                os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.pidfd)


class Zygotes:
    """The host's zygote, replaced when it dies: what the host, its supervisors and its
    pools ask for stubs (sandbox.monitor.stubs.Forker). `generation` counts the
    replacements; a stub records the one that forked it, so a run whose stub ended
    without a word can tell whether its zygote's death took it (`lost`).

    Replacement happens on the thread that made this object (the host's loop: the
    new zygote's PDEATHSIG is tied to it), when a stub is asked of a dead zygote or
    when the host sees its `pidfd` readable (`replace`). `on_replaced(old)` then lets
    the host drop what died with the old one (its spare, its pools)."""

    def __init__(self, first: Zygote, *, warm: bool = True,
                 on_replaced: Callable[[Zygote], None] | None = None) -> None:
        self.current = first
        self.generation = 0
        self.warm = warm
        self.on_replaced = on_replaced
        self._deaths: dict[int, str] = {}
        self._owner = threading.get_ident()

    def fork_stub(self, req: ForkStub, fds: list[int]) -> tuple[int, int]:
        """A stub from the current zygote. ZygoteGone when it was dead: it is replaced
        (on the owner thread) and the caller asks again, with fresh sockets (the dead
        one may have forked a stub on these before it died)."""
        z = self.current
        try:
            return z.fork_stub(req, fds)
        except ZygoteGone:
            self.replace(z)
            raise

    def replace(self, dead: Zygote) -> bool:
        """Replace `dead` if it is still the current zygote and is dead; True if done."""
        if dead is not self.current or threading.get_ident() != self._owner:
            return False
        why = dead.death()
        if why is None:   # its socket failed, so it is ending (or of no use): make sure
            fdwait.readable([dead.pidfd], 5.0)
            if dead.death() is None:
                signal.pidfd_send_signal(dead.pidfd, signal.SIGKILL)
                fdwait.readable([dead.pidfd], None)
            why = dead.death() or f"the zygote (pid {dead.pid}) is gone"
        self._deaths[self.generation] = why
        while len(self._deaths) > DEATHS_KEPT:
            del self._deaths[min(self._deaths)]
        self.current = Zygote.spawn(warm=self.warm)
        self.generation += 1
        try:
            if self.on_replaced is not None:
                self.on_replaced(dead)
        finally:
            dead.close()   # reap it (dead already)
        return True

    def lost(self, generation: int) -> str | None:
        """Why the zygote of `generation` is gone, or None while it lives."""
        if generation == self.generation:
            return self.current.death()
        return self._deaths.get(generation, "the zygote that forked this stub died")

    def close(self) -> None:
        self.current.close()


def _serve(sock: socket.socket) -> int:
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() == 1:
        return 0
    prctl.set_child_subreaper(1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    from sandbox.sandboxee import stub_fork
    compiled = stub_fork.load()   # the compiled stub, or None: the Python one
    template.plug_free_blocks()   # last, before the first fork: see its docstring
    template.plug_heap()
    children: dict[int, int] = {}   # pidfd -> pid
    watched = [sock.fileno()]       # the socket, then every child's pidfd
    while True:
        ready, _ = fdwait.ready(watched)
        for fd in ready:
            if fd in children:
                _reap(fd, children)
                watched.remove(fd)
        _reap_orphans(children)
        if ready[0] != watched[0]:   # `ready` keeps its input's order: the socket is first
            continue
        # The request is taken raw and read by the child (`_stub`) or by C: every page
        # this loop writes while a stub lives becomes that stub's own copy, and then its
        # sandbox's PID 2's (docs/benchmarks-journal.md, "PID 2's private pages by
        # phase", 1).
        data, fds, flags, _ = socket.recv_fds(sock, protocol.DATAGRAM_MAX + 1, STUB_FDS + 1)
        if not data and not fds:
            return 0
        try:
            got = compiled[0](data, fds[0], sock.fileno()) if compiled is not None \
                and not flags & protocol.TRUNCATED and len(fds) == STUB_FDS else None
            if got == 0:   # pragma: no cover - runs in PID 1
                _compiled_pid1(sock, fds, children, compiled[1]())  # type: ignore[index]
            if isinstance(got, tuple):   # the host has its answer (stub_fork.c)
                if got[1] >= 0:          # else reaped as an orphan (_reap_orphans)
                    children[got[1]] = got[0]
                    watched.append(got[1])
                pid = 0
            elif got is None:
                pid = forking.fork_single_threaded()
                if pid == 0:   # pragma: no cover - runs in the stub
                    _stub(sock, data, fds, flags, children)
            else:
                pid = 0   # refused: the C code told the host
        except OSError as exc:
            protocol.send(sock, Refused(f"fork: {exc}"[:1000]))
            pid = -1
        if pid > 0:
            pidfd = os.pidfd_open(pid)    # before any reaping: never a recycled pid
            children[pidfd] = pid
            watched.append(pidfd)
            socket.send_fds(sock, [protocol.forked_datagram(pid)], [pidfd])
        for fd in fds:
            os.close(fd)


def _compiled_pid1(sock: socket.socket, fds: list[int], children: dict[int, int],
                   namespaces: bool) -> None:
    """PID 1, forked by the compiled stub (sandbox.sandboxee.stub_fork), back from the
    zygote's call: drop what is the zygote's, then go on as the Python stub's PID 1.
    Never returns."""
    try:
        sock.close()
        for fd in children:
            os.close(fd)
        for fd in fds:   # received descriptors are inheritable: the program must not get them
            os.set_inheritable(fd, False)
        from sandbox.monitor import stubs
        from sandbox.sandboxee import planned, stub
        stub.pid1_of_compiled(socket.socket(fileno=fds[0]), socket.socket(fileno=fds[2]),
                              namespaces, stubs.Pid1Entry(fds[1]), _native.INIT_PATH,
                              planned.start(fds[1]))
    finally:
        os._exit(126)


def _stub(sock: socket.socket, data: bytes, fds: list[int], flags: int,
          children: dict[int, int]) -> None:
    """The zygote's child (the zygote answers the host for it): read the request and
    become the stub. A request it cannot serve ends it: the host sees a stub that ended
    before `StubReady`. Never returns."""
    try:
        sock.close()
        for fd in children:
            os.close(fd)
        if flags & protocol.TRUNCATED or len(fds) != STUB_FDS:
            os._exit(1)
        req = protocol.fork_stub_from_datagram(data)
        for fd in fds:   # received descriptors are inheritable: the program must not get them
            os.set_inheritable(fd, False)
        from sandbox.monitor import stubs
        from sandbox.sandboxee import stub
        status = socket.socket(fileno=fds[0])
        go = socket.socket(fileno=fds[2])
        from sandbox.sandboxee import planned
        stub.run_waiting(status, go, req, stubs.Pid1Entry(fds[1]), _native.INIT_PATH,
                         planned.start(fds[1]))
    finally:
        os._exit(1)


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


def main() -> int:
    """``python -I -m sandbox.monitor.zygote``: a replacement, started by fork+exec from
    the host (`Zygote.spawn`); the socket and the host's pid come in its environment."""
    parent = int(os.environ["SANDBOX_ZYGOTE_PARENT"])
    sock = socket.socket(fileno=int(os.environ["SANDBOX_ZYGOTE_FD"]))
    prctl.set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:
        return 3   # the host is gone already
    ignore_group_signals()
    from sandbox.monitor import preload
    if os.environ.get("SANDBOX_ZYGOTE_WARM") == "1":
        preload.warm()
    else:
        preload.preload()
    for name in ("SANDBOX_ZYGOTE_FD", "SANDBOX_ZYGOTE_PARENT", "SANDBOX_ZYGOTE_WARM"):
        os.environ.pop(name, None)   # the first zygote's forks never had them
    import gc
    gc.collect()
    gc.freeze()
    return _serve(sock)


if __name__ == "__main__":
    sys.exit(main())
