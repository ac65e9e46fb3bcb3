"""The `sandbox exec` daemon's one warm fork server, shared by every run it serves.

WHY: each run the daemon serves is a fork of the daemon running the unchanged
`sandbox exec` code. Left to itself that code exec's a fresh monitor
interpreter per run (a Python start-up plus the monitor's imports: about 60 ms
here, docs/benchmarks-journal.md), and a fork server of its own would cost the same
once per run. The daemon instead starts one fork server when it starts
(preloaded, filters compiled, cgroups probed, a spare sandbox ready) and every
forked run asks that one for its monitor.

The fork server speaks one request, one reply on one SOCK_SEQPACKET socket,
which every forked run inherits. Requests are serialised across those
processes with an exclusive `flock` on a file in the daemon's private
directory, opened by each run after the fork (flock locks belong to the open
file description, so an inherited one would be shared, not exclusive). While a
run holds the lock its catchable signals are blocked, so a client going away
(SIGHUP from the daemon) cannot end it between request and reply. Only
SIGKILL can still end a run there, leaving a reply nobody takes, which the
next run would take for its own (a monitor that is not its). So the lock file
also counts, per server, the requests sent and the replies taken: a run that
finds a request unanswered first takes that stale reply (waiting up to
STALE_WAIT for it) and closes its descriptors, then sends its own.

Only the daemon starts, restarts and stops the server (`Owner`); a forked run
never does (`ForRun.close` is a no-op). A server that has died is replaced
before the daemon forks the next run; a run that meets one dying (killed
during its request, or still exiting when the daemon forked the run: a killed
process shows as a zombie before its last thread is gone, so the daemon's
`poll` can still see it alive) raises `monitors.ServerGone`, and that run
starts its own monitor the cold way, as `sandbox exec` does without a daemon:
slower, never failed.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys

from sandbox import fdwait
from sandbox.launcher import monitors

STALE_WAIT = 5.0   # seconds a run waits for a killed run's reply before its own request


class Owner(monitors.ForkServerClient):
    """The daemon's handle: starts the server at once; `ensure()` restarts a dead one."""

    def ensure(self) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.close_locked()
                self._start()

    def for_run(self, lock_path: str) -> "ForRun":
        """In a forked run: a client of this very server (the inherited socket)."""
        assert self._sock is not None and self._proc is not None
        return ForRun(self._sock, lock_path, self._proc.pid)


class ForRun(monitors.ForkServerClient):
    """A forked run's client of the daemon's server: same requests, under the lock."""

    def __init__(self, sock: socket.socket, lock_path: str, server_pid: int) -> None:
        super().__init__()
        self._sock = sock
        self._lock_path = lock_path
        self._server = server_pid

    def spawn(self, fds: list[int]) -> int:
        catchable = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, catchable)
        lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                       0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sent, taken = self._counts(lock)
            for _ in range(sent - taken):
                if not self._take_stale():
                    break
            self._save(lock, sent + 1, sent)        # ours is outstanding
            reply = self._request(fds)
            self._save(lock, sent + 1, sent + 1)
            return reply
        except ConnectionError as exc:
            # gone before it answered (killed, or still exiting when the daemon forked
            # this run): the run starts its own monitor cold (monitors.start_monitor)
            raise monitors.ServerGone(f"the daemon's fork server is gone ({exc})") from None
        finally:
            os.close(lock)       # releases the lock
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _counts(self, lock: int) -> tuple[int, int]:
        """(requests sent, replies taken) on this server; (0, 0) for another server."""
        fields = os.pread(lock, 64, 0).split()
        try:
            if len(fields) == 3 and int(fields[0]) == self._server:
                sent, taken = int(fields[1]), int(fields[2])
                if 0 <= taken <= sent:
                    return sent, taken
        except ValueError:
            pass
        return 0, 0

    def _save(self, lock: int, sent: int, taken: int) -> None:
        os.pwrite(lock, f"{self._server} {sent} {taken}".ljust(63).encode() + b"\n", 0)

    def _take_stale(self) -> bool:
        """Take (and drop) one reply meant for a run that was killed; False if none came."""
        assert self._sock is not None
        if not fdwait.readable([self._sock], STALE_WAIT):
            return False
        try:   # (socket.recv_fds ignores its flags argument: recvmsg itself)
            data, anc, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(4 * 4),
                                                 socket.MSG_DONTWAIT)
        except OSError:
            return False         # the server is gone: the request says so
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                for i in range(0, len(raw) - len(raw) % 4, 4):
                    os.close(int.from_bytes(raw[i:i + 4], sys.byteorder))
        return bool(data)

    def close_locked(self) -> None:
        """Never stop the daemon's server from a run."""

    @property
    def pid(self) -> int | None:
        return None
