"""The standard descriptors of one of our processes, held open, and which of them the
caller left closed.

Its own module, importing only `os`: the cold CLI calls it before it starts the
exec'd monitor (sandbox/launcher/early.py), and the monitor's start is on the path
of every cold run. From sandbox.monitor.stdio, whose imports (dataclasses, threading,
the relay hub) it used to share, it cost the CLI ~8 ms before that start.

A caller's closed 0, 1 or 2 is the program's closed one too, as after a direct exec
(`cat <&-` fails with EBADF; the sandbox gave it an empty /dev/null). Our processes
still hold /dev/null there, so nothing they open takes the number, and remember the
descriptor as closed (`CALLER_CLOSED`): the run's init closes it in the program
(init.c). A thin client that must hand a closed one to the daemon hands an O_PATH
descriptor of /dev/null (sandbox/thin/client.py, client.c), which reads and writes nothing either.
"""
from __future__ import annotations

import os

CALLER_CLOSED = 0   # bit N: our caller started us with descriptor N (0, 1, 2) closed


def ensure_open(fd: int) -> bool:
    """`fd` open: a closed standard descriptor becomes /dev/null, so nothing
    opened later takes its number and is mistaken for it. True if it was closed."""
    try:
        os.fstat(fd)
        return False
    except OSError:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        return True


def hold_caller_fds() -> int:
    """0, 1 and 2 open (/dev/null for a closed one or a thin client's marker), and
    `CALLER_CLOSED` the set of those that were closed; returns it."""
    global CALLER_CLOSED
    for fd in (0, 1, 2):
        try:
            if _flags(fd) & os.O_PATH:
                os.close(fd)
        except OSError:
            pass
        if ensure_open(fd):
            CALLER_CLOSED |= 1 << fd
    return CALLER_CLOSED


def _flags(fd: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL)
