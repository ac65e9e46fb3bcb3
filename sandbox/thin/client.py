"""The thin client: `sandbox exec` through a running daemon, importing almost nothing.

`try_exec(argv)` returns the exit code when a daemon of ours ran the command,
or None when there is no usable daemon (the caller then cold-starts, as
without one). Only `os`, `sys`, `_socket` and `_signal` are used: the `socket`
and `signal` modules would bring `enum`, and `json` would bring `re`
(measured with ``python -X importtime``: docs/benchmarks.md).

What the client passes: its stdin, stdout and stderr (the descriptors
themselves, SCM_RIGHTS), its working directory (an O_PATH descriptor), its
arguments and its whole environment. The daemon's forked child takes all of
them in place of its own, then runs the very code of the cold path, so
every rule of `sandbox exec` holds (exit codes, 125 for bad input, stdin, -t,
the environment allowlist). Signals the client receives (INT, TERM, HUP,
QUIT, USR1, USR2, WINCH) are forwarded to that child, which relays them to
the program as the cold path does.
"""
from __future__ import annotations

import os
import sys

from sandbox.thin import wire

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (see above)
if TYPE_CHECKING:
    import _socket


def _connect(path: str) -> _socket.socket | None:
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        # the peer must be a daemon of ours (SO_PEERCRED: pid, uid, gid as 3 ints)
        cred = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if int.from_bytes(cred[4:8], "little") != os.getuid():
            s.close()
            return None
    except OSError:
        s.close()
        return None
    return s


def _std_fds() -> list[int]:
    """0, 1, 2 -- a closed one is sent as /dev/null, as the cold path makes it."""
    out = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            out.append(fd)
        except OSError:
            out.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
    return out


def try_exec(argv: list[str]) -> int | None:
    env = os.environ
    if env.get("SANDBOX_DAEMON") == "0":
        return None
    # First: a closed 0, 1 or 2 would be taken by the socket or the directory below
    # (and sent as the program's stdio). The cold path does the same (_hold_stdio).
    std = _std_fds()
    d = wire.socket_dir(env)
    if not wire.private_dir_ok(d):
        return None
    s = _connect(os.path.join(d, "sock"))
    if s is None:
        return None
    import _socket
    import _signal  # type: ignore[import-not-found]  # `signal` would import enum
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    fds = std + [cwd]
    msg = wire.encode("exec", argv, dict(env))
    rights = b"".join(fd.to_bytes(4, "little") for fd in fds)
    try:
        sent = s.sendmsg([msg[:65536]], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        if sent < len(msg):
            s.sendall(msg[sent:])
    except OSError:
        s.close()
        return None
    finally:
        os.close(cwd)

    def forward(signum: int, frame: object) -> None:
        try:
            s.send(b"S" + bytes([signum]))
        except OSError:
            pass
    for sig in wire.SIGNALS:
        _signal.signal(sig, forward)
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
    s.close()
    # The daemon went away in the middle of the run (stopped, or killed): the run's
    # outcome is unknown; say so the way the cold path reports its own failures.
    os.write(2, b"sandbox: error: the sandbox daemon ended during the run\n")
    return 125
