"""Waiting on descriptors: poll(2), never select(2), in every process of ours.

Why: `select.select` takes no descriptor at or above FD_SETSIZE (1024): it raises
ValueError. The monitor host holds several descriptors per live run (its sockets,
the stub's pidfd, the seccomp listener, the stdio relay, the allowlist proxy's
connections) and the launcher several per run in flight, so past about 50 runs at
once the newest were over 1024: `sandbox bench` saw every run after the 50th fail
with "the monitor failed: ValueError: filedescriptor out of range in select()".
poll has no such bound. `ready` answers as select does (the objects given, in
their order; a closed descriptor is an error), so callers keep their handling.
"""
from __future__ import annotations

import errno
import math
import select
from typing import Any, Sequence, TypeVar

F = TypeVar("F")

_READ = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR
_WRITE = select.POLLOUT | select.POLLHUP | select.POLLERR


def _fd(obj: Any) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError("file descriptor cannot be a negative integer")
    return int(fd)


def ready(read: Sequence[F], write: Sequence[F] = (),
          timeout: float | None = None) -> tuple[list[F], list[F]]:
    """Of `read`, those readable (or at their end, or hung up: a pidfd whose process
    exited), and of `write`, those writable, within `timeout` seconds (0: now; None:
    until one is). Descriptors or objects with `fileno()`; OSError (EBADF) for a
    descriptor that is not open, ValueError for a closed object, as select."""
    events: dict[int, int] = {}
    for obj in read:
        fd = _fd(obj)
        events[fd] = events.get(fd, 0) | select.POLLIN | select.POLLPRI
    for obj in write:
        fd = _fd(obj)
        events[fd] = events.get(fd, 0) | select.POLLOUT
    p = select.poll()
    for fd, ev in events.items():
        p.register(fd, ev)
    got = dict(p.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))))
    if any(ev & select.POLLNVAL for ev in got.values()):
        raise OSError(errno.EBADF, "Bad file descriptor")
    return ([o for o in read if got.get(_fd(o), 0) & _READ],
            [o for o in write if got.get(_fd(o), 0) & _WRITE])


def readable(fds: Sequence[Any], timeout: float | None) -> bool:
    """Whether one of `fds` is readable (or at its end) within `timeout` seconds."""
    return bool(ready(fds, (), timeout)[0])
