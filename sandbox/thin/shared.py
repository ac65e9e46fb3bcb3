"""The `sandbox exec` daemon's one warm fork server, shared by every run it serves.

WHY: each run the daemon serves is a fork of the daemon running the unchanged
`sandbox exec` code. Left to itself that code exec's a fresh monitor
interpreter per run (a Python start-up plus the monitor's imports: about 60 ms
here, docs/benchmarks.md), and a fork server of its own would cost the same
once per run. The daemon instead starts one fork server when it starts
(preloaded, filters compiled, cgroups probed, a spare sandbox ready) and every
forked run asks that one for its monitor.

The fork server speaks one request, one reply on one SOCK_SEQPACKET socket,
which every forked run inherits. Requests are serialised across those
processes with an exclusive `flock` on a file in the daemon's private
directory, opened by each run after the fork (flock locks belong to the open
file description, so an inherited one would be shared, not exclusive). While a
run holds the lock its catchable signals are blocked, so a client going away
(SIGHUP from the daemon) cannot end it between request and reply; any reply
still queued when the lock is taken (left by a run killed with SIGKILL in that
window) is drained first, so a run never takes another's monitor.

Only the daemon starts, restarts and stops the server (`Owner`); a forked run
never does (`ForRun.close` is a no-op, and a dead server is an OSError for that
run: "cannot start the monitor", exit 125, while the daemon restarts it for the
next).
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys

from sandbox.launcher import monitors


class Owner(monitors.ForkServerClient):
    """The daemon's handle: starts the server at once; `ensure()` restarts a dead one."""

    def ensure(self) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self.close_locked()
                self._start()

    def for_run(self, lock_path: str) -> "ForRun":
        """In a forked run: a client of this very server (the inherited socket)."""
        assert self._sock is not None
        return ForRun(self._sock, lock_path)


class ForRun(monitors.ForkServerClient):
    """A forked run's client of the daemon's server: same requests, under the lock."""

    def __init__(self, sock: socket.socket, lock_path: str) -> None:
        super().__init__()
        self._sock = sock
        self._lock_path = lock_path

    def spawn(self, fds: list[int]) -> tuple[int, int]:
        catchable = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
        old = signal.pthread_sigmask(signal.SIG_BLOCK, catchable)
        lock = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                       0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._drain()
            return self._request(fds)
        except ConnectionError as exc:
            raise OSError(f"the daemon's fork server is gone ({exc}); the daemon starts "
                          "a new one for the next run") from None
        finally:
            os.close(lock)       # releases the lock
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _drain(self) -> None:
        """Drop replies nobody waits for (see the module docstring)."""
        assert self._sock is not None
        while True:
            try:   # (socket.recv_fds ignores its flags argument: recvmsg itself)
                data, anc, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(4 * 4),
                                                     socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return          # the server is gone: the request says so
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    for i in range(0, len(raw) - len(raw) % 4, 4):
                        os.close(int.from_bytes(raw[i:i + 4], sys.byteorder))
            if not data:
                return          # end of stream: likewise

    def close_locked(self) -> None:
        """Never stop the daemon's server from a run."""

    @property
    def pid(self) -> int | None:
        return None
