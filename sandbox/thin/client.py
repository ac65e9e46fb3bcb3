"""The thin client: `sandbox exec` through a running daemon, importing almost nothing.

`try_exec(argv)` returns the exit code when a daemon of ours ran the command,
or None when there is no usable daemon (the caller then cold-starts, as
without one). Only `os`, `sys`, `_socket` and `_signal` are used: the `socket`
and `signal` modules would bring `enum`, and `json` would bring `re`
(measured with ``python -X importtime``: docs/benchmarks-journal.md).

What the client passes: its stdin, stdout and stderr (the descriptors
themselves, SCM_RIGHTS), its working directory (an O_PATH descriptor), its
arguments and its whole environment. The daemon's forked child takes all of
them in place of its own, then runs the very code of the cold path, so
every rule of `sandbox exec` holds (exit codes, 125 for bad input, stdin, -t,
the environment allowlist). Signals the client receives (INT, TERM, HUP,
QUIT, USR1, USR2, WINCH and every other signal a caller may send its group:
wire.SIGNALS) are forwarded to that child, which relays them to the program as the
cold path does; those that arrive before the request is sent are queued.
"""
from __future__ import annotations

import os
import sys

from sandbox.thin import wire

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (see above)
if TYPE_CHECKING:
    import _socket
    from typing import Any


def _connect(path: str) -> _socket.socket | None:
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        # the peer must be a daemon of ours, with our groups (wire.same_identity)
        cred = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        groups = s.getsockopt(_socket.SOL_SOCKET, wire.SO_PEERGROUPS, wire.PEERGROUPS_BYTES)
        if not wire.same_identity(cred, groups):
            s.close()
            return None
    except OSError:
        s.close()
        return None
    return s


def _std_fds() -> list[int]:
    """0, 1, 2 -- a closed one is sent as an O_PATH descriptor of /dev/null, which the
    run takes for closed (sandbox.std_fds: the program's is closed too)."""
    out = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            out.append(fd)
        except OSError:
            out.append(os.open(os.devnull, os.O_PATH | os.O_CLOEXEC))   # std_fds
    return out


class _Relay:
    """The client's signals, from before it connects: each is queued until the request
    is sent, then sent as it comes ("S<signum>"). A signal that came in the first
    milliseconds, before the handlers existed, killed the client, or (once sent to a
    fork not yet relaying) was lost: the program ran on to exit 0 (probe4 H9). What
    the caller ignores (nohup) stays ignored and is not relayed, as a direct run's
    program would ignore it (its dispositions are the caller's: caller_state)."""

    def __init__(self, _signal: Any) -> None:
        self._signal = _signal
        self.sock: _socket.socket | None = None
        self.queued: list[int] = []
        self.saved: dict[int, object] = {}
        for sig in wire.SIGNALS + wire.JOB_CONTROL:
            old = _signal.getsignal(sig)
            if old == _signal.SIG_IGN and sig not in wire.PYTHONS_OWN:
                continue
            self.saved[sig] = old
            _signal.signal(sig, self.forward)

    def forward(self, signum: int, frame: object) -> None:
        if self.sock is None:
            self.queued.append(signum)
            return
        try:
            self.sock.send(b"S" + bytes([signum]), 0x4000)   # MSG_NOSIGNAL
        except OSError:
            pass
        if signum == wire.JOB_CONTROL[0]:   # ^Z: the program's group stops, then we do
            os.kill(os.getpid(), 19)        # SIGSTOP

    def start(self, sock: _socket.socket) -> None:
        """The request is sent: what was queued goes now, the rest as it comes."""
        self.sock = sock
        while self.queued:
            self.forward(self.queued.pop(0), None)

    def give_back(self) -> None:
        """No daemon run: the handlers as they were, and what was queued raised again
        (for the cold path's own handlers: a ^C is its KeyboardInterrupt, as before)."""
        for sig, old in self.saved.items():
            self._signal.signal(sig, old)
        while self.queued:
            os.kill(os.getpid(), self.queued.pop(0))


def try_exec(argv: list[str]) -> int | None:
    env = os.environ
    if env.get("SANDBOX_DAEMON") == "0":
        return None
    import _signal  # type: ignore[import-not-found]  # `signal` would import enum
    relay = _Relay(_signal)
    code = _exec(argv, env, relay)
    if code is None:
        relay.give_back()
    return code


def _exec(argv: list[str], env: "os._Environ[str]", relay: _Relay) -> int | None:
    # First: a closed 0, 1 or 2 would be taken by the socket or the directory below
    # (and sent as the program's stdio). The cold path does the same (_hold_stdio).
    std = _std_fds()
    d = wire.socket_dir(env)
    if not wire.private_dir_ok(d):
        return None
    s = _connect(wire.socket_path(env))
    if s is None:
        return None
    import _socket
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = std + [cwd]
    msg = wire.encode("exec", argv, dict(env))
    rights = b"".join(fd.to_bytes(4, "little") for fd in fds)
    try:
        sent = s.sendmsg([msg[:65536]], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)],
                         _socket.MSG_NOSIGNAL)
        if sent < len(msg):
            s.sendall(msg[sent:], _socket.MSG_NOSIGNAL)
    except OSError:
        s.close()
        return None
    finally:
        os.close(cwd)
    relay.start(s)
    got = b""
    while True:
        try:
            chunk = s.recv(2)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        got += chunk
        if len(got) >= 2 and got[:1] == b"X":
            s.close()
            return got[1]
        if len(got) >= 2 and got[:1] == b"K":   # end as the program did (^C)
            s.close()
            from sandbox.process_end import die_by
            return die_by(got[1])
    s.close()
    # The daemon went away in the middle of the run: the run's
    # outcome is unknown; say so the way the cold path reports its own failures.
    os.write(2, b"sandbox: error: the sandbox daemon ended during the run\n")
    return 125
