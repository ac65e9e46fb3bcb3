"""A run's fork of the daemon: what it drops of the daemon's, how it becomes the
client's `sandbox exec`, and the spare fork made ahead of the next request.

WHY the spare: every warm `sandbox exec` paid, on its path, the daemon's fork (~2
ms: the copy of its page tables) and the fork's first steps (~1.5 ms: closing the
daemon's descriptors, resetting signal dispositions), measured in the daemon with
the compiled client (15 runs, quiet machine). The daemon now keeps one fork ready
(`Spare`), made right after it answered a client, so between two `sandbox exec`s
rather than during one. A request is handed to it whole: the request's bytes and
the client's four descriptors (stdin, stdout, stderr, working directory, and none
other) over a socket pair of their own (SCM_RIGHTS). The daemon forks at the
request, as before, when no spare is ready (a second request while a run is on, or
a spare made before the fork server it holds a client of was replaced). Both ways
run the same `child` after the same `detach`.

Trust: a spare holds what a direct fork holds and no more. It drops the daemon's
listening socket, selector and every run's descriptors at once, before it waits,
so no client's connection or pipe stays open in it; its environment is the
daemon's until a request replaces it with the client's, as in a direct fork. It
takes requests from the daemon only (its end of a private socket pair) and exits at
the end of that stream: when the daemon stops, dies, or drops it.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from sandbox import fdwait
from sandbox.launcher import tidy
from sandbox.thin import prefault, wire

if TYPE_CHECKING:
    from sandbox.thin.relay import RelayedHistory
    from sandbox.thin.shared import Owner

FDS = 4        # the client's stdin, stdout, stderr and working directory
# argv, environment, FDS descriptors, and the client's pid (SO_PEERCRED; its terminal
# decides an automatic -t: sandbox.cli.terminal)
Request = tuple[list[str], dict[str, str], list[int], int]
HELD = wire.SIGNALS + wire.JOB_CONTROL   # the client's, which a fork relays


class Daemon(Protocol):
    """What a fork takes of the daemon (sandbox.thin.daemon.Daemon, which forks it):
    where its socket is, exec's parser and the fork server, built once there, and
    what it holds that is not a run's (`let_go`)."""
    path: str
    parser: Any        # exec's argparse parser (sandbox.cli.main)
    forkserver: "Owner"

    def let_go(self) -> None: ...


@dataclass
class Spare:
    """The daemon's handle on a fork waiting for a request."""
    pid: int
    sock: socket.socket    # the daemon's end: the request and the client's descriptors
    done: int              # the fork's frame (sandbox.thin.relay), as a run's
    server: int            # the pid of the fork server whose client it holds

    def hand(self, argv: list[str], env: dict[str, str], fds: list[int], caller: int) -> bool:
        """Give the spare the request; False (and the spare is gone) if it cannot take
        it, and the daemon forks instead. The client's pid goes first in argv (this
        socket pair is the daemon's own, never a client's)."""
        data = wire.encode("exec", [str(caller), *argv], env)
        try:
            sent = socket.send_fds(self.sock, [data], fds)
            if sent < len(data):
                self.sock.sendall(data[sent:])
        except OSError:
            self.drop()
            return False
        self.sock.close()
        return True

    def drop(self) -> None:
        """The spare is not used: it ends, and is reaped here."""
        self.sock.close()
        os.close(self.done)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def start(daemon: Daemon, request: Callable[[], Request | None],
          drop: tuple[socket.socket, ...] = ()) -> tuple[int, int]:
    """In the daemon: fork a run's process, which closes `drop` and what is the
    daemon's (`detach`), takes its request from `request()` (None: no run, it ends with
    125 unread) and runs it (`child`). Returns its pid and the read end of its frame
    (sandbox.thin.relay)."""
    from sandbox.thin import relay
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    # The client's signals are blocked across the fork until the child holds them
    # (`detach`): one that came first had the daemon's disposition there (SIGINT's
    # KeyboardInterrupt ended the fork with a silent 125: probe4 H9)
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
        raise
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
    if pid == 0:
        code, history = 125, relay.RelayedHistory()
        try:
            os.close(done_r)
            for s in drop:
                s.close()
            detach(daemon)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
            tidy.hold()     # the run's directories go after the answer (relay.finish)
            got = request()
            if got is not None:
                code = child(daemon, *got, history)
        finally:
            from sandbox.cli import common
            relay.finish(done_w, code, history, common.CLI_DIE_BY)
    os.close(done_w)
    return pid, done_r


def make(daemon: Daemon) -> Spare:
    """In the daemon: fork a spare, which waits for its request (`_wait`)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid, done_r = start(daemon, lambda: _wait(theirs), (ours,))
    theirs.close()
    return Spare(pid, ours, done_r, daemon.forkserver.pid or 0)


def receive(sock: socket.socket) -> tuple[str, list[str], dict[str, str], list[int], bytes]:
    """One request on `sock` (sandbox.thin.wire): (op, argv, env, descriptors, what came
    after it). A client sends its first signals ("S<signum>") right after its request,
    so one read may hold both: they are returned, not decoded as part of the request
    (they were taken for the tail of its last environment entry, and the signal was
    lost: probe4 H9). Raises ValueError on a malformed one and OSError; the descriptors
    received are closed then."""
    fds: list[int] = []
    try:
        data, got, _, _ = socket.recv_fds(sock, 65536, 8)
        fds = list(got)
        if len(data) < 4:
            raise ValueError("short request")
        size = int.from_bytes(data[:4], "little")
        if size > wire.MAX_REQUEST:
            raise ValueError("request too large")
        body = bytearray(data[4:])
        while len(body) < size:
            chunk = sock.recv(min(65536, size - len(body)))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        op, argv, env = wire.decode(bytes(body[:size]))
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise
    return op, argv, env, fds, bytes(body[size:])


def _wait(sock: socket.socket) -> Request | None:
    """In the spare: the daemon's request, or None at the end of the stream (or on
    anything malformed: the daemon's own bytes, so a bug, never to be guessed at).
    Unless the request is already there, the pages shared with the daemon are copied
    first (sandbox.thin.prefault), so the run does not fault on each one it writes."""
    if not fdwait.readable([sock], 0):
        prefault.prefault()
    try:
        op, argv, env, fds, _ = receive(sock)   # the daemon's: nothing follows
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    if op != "exec" or len(fds) != FDS or not argv or not argv[0].isdigit():
        for fd in fds:
            os.close(fd)
        return None
    return argv[1:], env, fds, int(argv[0])


def detach(daemon: Daemon) -> None:
    """In any fork of the daemon, first: close what is the daemon's (its listening
    socket, its selector, every run's and the spare's descriptors) and give the signals
    the daemon handles their default disposition."""
    daemon.let_go()
    for sig in HELD + (signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    from sandbox.launcher import signals
    signals.hold()   # the client's, relayed by the daemon from now on: the program's


def child(daemon: Daemon, argv: list[str], env: dict[str, str], fds: list[int],
          caller: int, history: RelayedHistory) -> int:
    """In the fork, after `detach`: become the client's `sandbox exec` process, then run
    it; the run's history row goes to `history` (a relay.RelayedHistory, written by the
    daemon)."""
    for i, fd in enumerate(fds[:3]):
        os.dup2(fd, i)          # inheritable, like the caller's own 0, 1, 2
    os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.environ.clear()           # unsetenv each: the C environ too
    os.environ.update(env)
    from sandbox.cli import common
    common.CLI_CALLER_PID = caller
    common.CLI_FORKSERVER = daemon.forkserver.for_run(
        os.path.join(os.path.dirname(daemon.path), "forkserver.lock"))
    from sandbox.history import default_path
    history.path = default_path()     # of the client's environment, now this one's
    common.CLI_HISTORY = history
    from sandbox.cli.main import main
    try:
        code = main(argv, daemon.parser)
    except SystemExit as exc:    # --help, --version
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    return code
