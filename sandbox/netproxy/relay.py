"""Relaying one proxied connection's bytes both ways, bounded in what it holds.

One `CHUNK` buffer (or one pipe) per direction: a slow reader stops the relay,
never grows a buffer; `IDLE_TIMEOUT` without a byte either way ends it; the
monitor's own CPU is checked against `limits.monitor_cpu` every `CPU_EVERY`
bytes. The bytes themselves move in the kernel (splice), never through Python
where it allows.
"""
from __future__ import annotations

import fcntl
import os
import socket
from typing import Callable, Protocol

from sandbox import fdwait

IDLE_TIMEOUT = 300.0
CHUNK = 256 * 1024
# Each of the proxy's sockets gets fixed buffers of this size (the kernel doubles it for
# its bookkeeping), never the kernel's autotuning: a client that reads nothing while its
# upstream sends let each upstream socket grow to tcp_rmem's maximum (32 MiB here), and
# 60 tunnels held 167 MiB of the host's memory, none of it the sandbox's (found by
# probing, 2026-12-07). Bound per connection: 2 sockets x 2 buffers x 2 x SOCKET_BUFFER,
# plus one CHUNK pipe per direction.
SOCKET_BUFFER = 256 * 1024
CPU_EVERY = 64 * 1024 * 1024     # bytes relayed between two checks of the monitor's CPU


class Counts(Protocol):
    """Where the relay counts (the connection's audit record)."""
    up: int
    down: int
    result: str


def bound_buffers(s: socket.socket) -> None:
    """Fixed send and receive buffers (before connect for an upstream socket, so the
    window it offers is made for them)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)


def relay(a: socket.socket, b: socket.socket, rec: Counts, up_left: int | None,
          stopping: Callable[[], bool], over_budget: Callable[[], bool]) -> None:
    """Bytes both ways until both sides ended or nothing moved for IDLE_TIMEOUT;
    `up_left`: at most that many more bytes from `a` (the rest of one request's
    body; then `a` is no longer read, and the upstream's answer still flows).

    The kernel moves the bytes (splice through one pipe per direction: no copy
    into Python); where splice is refused, recv_into/sendall through one buffer."""
    try:
        pipes = {a: _pipe(), b: _pipe()}
    except OSError:
        pipes = {}
    try:
        _pump(a, b, rec, pipes, up_left, stopping, over_budget)
    finally:
        for r, w in pipes.values():
            os.close(r)
            os.close(w)


def _pump(a: socket.socket, b: socket.socket, rec: Counts,
          pipes: dict[socket.socket, tuple[int, int]], up_left: int | None,
          stopping: Callable[[], bool], over_budget: Callable[[], bool]) -> None:
    open_ = {a: b, b: a}
    if up_left == 0:
        del open_[a]
    for s in (a, b):
        s.settimeout(IDLE_TIMEOUT)   # bounds sendall and recv_into of the fallback
    # the fallback's one buffer, only where splice is refused: zero-filled, it is resident
    # at once (256 KiB a tunnel, 17 MiB for 64 idle ones, before 2026-12-07)
    view = memoryview(bytearray(CHUNK if not pipes else 0))
    since_check = 0
    while open_ and not stopping():
        r, _ = fdwait.ready(list(open_), (), IDLE_TIMEOUT)
        if not r:
            rec.result = "idle timeout"
            return
        for src in r:
            dst = open_.get(src)
            if dst is None:
                continue
            size = CHUNK if src is b or up_left is None else min(CHUNK, up_left)
            n = _move(src, dst, pipes.get(src), size, view)
            if n < 0:
                continue
            if src is a and up_left is not None and n > 0:
                up_left -= n
                if up_left == 0:
                    del open_[a]    # the request is whole: nothing more goes up
            if n == 0:
                del open_[src]
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            if src is a:
                rec.up += n
            else:
                rec.down += n
            since_check += n
        if since_check >= CPU_EVERY:
            since_check = 0
            if over_budget():
                rec.result = "monitor CPU budget spent"
                return


def _move(src: socket.socket, dst: socket.socket, pipe: tuple[int, int] | None,
          size: int, view: memoryview) -> int:
    """At most `size` bytes from src to dst (through `pipe`, else `view`), all of them
    written: how many; 0 at src's end, on an error or when dst accepted nothing for
    IDLE_TIMEOUT; -1 when src had nothing.

    Both sockets are in timeout mode (non-blocking underneath), so a full pipe or a
    slow reader is waited for (poll), never by blocking a splice forever."""
    if pipe is None:
        return _retry_recv(src, dst, view[:size])
    r, w = pipe
    try:
        n = os.splice(src.fileno(), w, size, flags=_SPLICE_MOVE | _SPLICE_NONBLOCK)
    except BlockingIOError:
        return -1
    except OSError:
        return 0
    left = n
    while left:
        try:
            left -= os.splice(r, dst.fileno(), left, flags=_SPLICE_MOVE | _SPLICE_NONBLOCK)
        except BlockingIOError:
            _, ready = fdwait.ready([], [dst], IDLE_TIMEOUT)
            if not ready:
                return 0
        except OSError:
            return 0
    return n


def _retry_recv(src: socket.socket, dst: socket.socket, view: memoryview) -> int:
    try:
        n = src.recv_into(view)
        if n:
            dst.sendall(view[:n])
    except OSError:
        return 0
    return n


_SPLICE_MOVE, _SPLICE_NONBLOCK = 1, 2
_F_SETPIPE_SZ = 1031


def _pipe() -> tuple[int, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, CHUNK)   # refused past the user's pipe quota: fine
    except OSError:
        pass
    return r, w


