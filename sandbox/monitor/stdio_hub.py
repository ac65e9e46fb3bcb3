"""One relay thread per process for every run's stdin, stdout and stderr.

Issue 14 puts every sandbox of a launcher under one monitor process, whose
memory may grow by at most 64 KiB per sandbox it watches. A copying thread
per relayed stream (three per run) costs about 31 KiB resident each, so the
relays of all runs share one thread here: a `selectors` (epoll) loop over
every relayed descriptor, each copy done without blocking.

Bounded by construction: a stream holds at most one chunk (`CHUNK`) that its
reader has not taken yet, and reads nothing more from its source until that
chunk is gone. A program that writes fast to a slow reader therefore fills
its own pipe and waits in `write`, exactly as it would writing to that reader
directly; the monitor's memory does not grow with it. Reads land in one
buffer shared by every stream; only a partial write copies its remainder.

Never blocking, without touching the caller's file: setting O_NONBLOCK on a
descriptor the caller gave us would change its open file description (its
shell's terminal, a pipe another process writes), so a caller's pipe, FIFO or
terminal is reopened through /proc/self/fd with O_NONBLOCK, a description of
our own; a socket is used with MSG_DONTWAIT; a regular file or block device
never waits on a reader (epoll refuses them) and is used as it is. When a
reopen is refused (a device we may not open again), the descriptor is used
blocking but only after epoll says it is ready, one PIPE_BUF at a time (a
pipe that is writable takes that much without blocking).

Every descriptor a stream holds is opened and closed here, in the hub's
thread, once the stream is handed over (`call`): no other thread can close a
number the loop still watches and see it reused.
"""
from __future__ import annotations

import errno
import fcntl
import os
import selectors
import signal
import socket
import stat
import threading
import time
from collections import deque
from typing import Callable

from sandbox.monitor.per_process import PerProcess

CHUNK = 16384          # bytes per read, and the most a stream holds for a slow reader
BLOCKING_SLICE = 4096  # PIPE_BUF: what a ready, blocking pipe takes without waiting
TURN = 4               # chunks a stream may copy before the others get their turn
BACKGROUND_RETRY = 0.1  # seconds between reads of a terminal our job does not have
# A write failing with these means the reader left (`| head`): the program gets
# SIGPIPE, as directly, and nothing is said. Any other (ENOSPC on /dev/full or a full
# disk, EIO, EDQUOT, EFBIG) is the caller's output failing: `Stream.error` (finding H4).
READER_GONE = (errno.EPIPE, errno.ECONNRESET)


class Endpoint:
    """One side of a stream: a descriptor and how to use it without waiting.
    `terminal`: the caller's terminal, whose reads job control may refuse."""
    __slots__ = ("fd", "sock", "pollable", "blocking", "terminal")

    def __init__(self, fd: int, *, sock: socket.socket | None = None,
                 pollable: bool = True, blocking: bool = False,
                 terminal: bool = False) -> None:
        self.fd, self.sock, self.pollable, self.blocking = fd, sock, pollable, blocking
        self.terminal = terminal

    def read(self, buf: memoryview) -> int:
        if self.sock is not None:
            return self.sock.recv_into(buf, len(buf), socket.MSG_DONTWAIT)
        return os.readv(self.fd, [buf])

    def write(self, data: memoryview) -> int:
        if self.blocking and self.pollable:
            data = data[:BLOCKING_SLICE]
        if self.sock is not None:
            return self.sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        return os.write(self.fd, data)

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.sock is not None:
            self.sock.close()
        else:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.fd = -1


def own_end(fd: int) -> Endpoint:
    """A pipe end or pty master made by the relay itself: ours to make non-blocking."""
    os.set_blocking(fd, False)
    return Endpoint(fd)


def caller_end(fd: int, *, writing: bool) -> Endpoint:
    """An endpoint for a descriptor of the caller's (ownership taken), never changing
    the caller's open file description (see the module's docstring)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode):
        return Endpoint(fd, pollable=False, blocking=True)
    if stat.S_ISSOCK(mode):
        return Endpoint(fd, sock=socket.socket(fileno=fd))
    terminal = stat.S_ISCHR(mode) and os.isatty(fd)
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:
        return Endpoint(fd, terminal=terminal)
    try:
        mine = os.open(f"/proc/self/fd/{fd}", (os.O_WRONLY if writing else os.O_RDONLY)
                       | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return Endpoint(fd, blocking=True, terminal=terminal)
    os.close(fd)
    return Endpoint(mine, terminal=terminal)


def in_background(fd: int) -> bool:
    """Whether `fd` is this process's controlling terminal and another process group
    has it: a read of it is then refused (EIO, as this process does not stop for
    SIGTTIN) and takes nothing. The cold monitor is in the caller's job's group but not
    stopped with it: after ^Z and `bg` its read is refused, and is tried again until
    `fg` (a direct program would stop for SIGTTIN until then). A job started in the
    background reads end of input instead: it is not stopped, nor waits unseen."""
    try:
        return os.tcgetpgrp(fd) != os.getpgrp()
    except OSError:   # not our controlling terminal: job control does not apply
        return False


class Stream:
    """Bytes from `src` to `dst`, for one relay. `on_end(stream, broken)` is called in
    the hub's thread once, when the source ended (broken False) or the destination
    failed (broken True); both descriptors are closed by then. `error` is the
    destination's failure when it was not its reader leaving (`READER_GONE`)."""
    __slots__ = ("src", "dst", "on_end", "pending", "waiting", "ended", "error", "held",
                 "was_held")

    def __init__(self, src: Endpoint, dst: Endpoint,
                 on_end: Callable[["Stream", bool], None]) -> None:
        self.src, self.dst, self.on_end = src, dst, on_end
        self.pending: memoryview | None = None
        self.waiting: tuple[Endpoint, int] | None = None
        self.ended = False
        self.error: OSError | None = None
        self.held = False   # not copied until `release` (the caller's job is stopped)
        self.was_held = False   # the caller's job was stopped once (and may be `bg`'d)


class StdioHub:
    """The process's relay loop (use `shared()`): one thread, started at the first call."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._ready: deque[Stream] = deque()       # streams with work on a non-pollable end
        self._timers: dict[object, tuple[float, Callable[[], None]]] = {}
        self._buf = memoryview(bytearray(CHUNK))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- from any thread ------------------------------------------------------------
    def call(self, fn: Callable[[], None]) -> None:
        """Run `fn` in the hub's thread, soon (starting the thread if needed)."""
        with self._lock:
            self._calls.append(fn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="stdio-hub",
                                                daemon=True)
                self._thread.start()
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass   # already woken

    def in_hub(self) -> bool:
        return self._thread is threading.current_thread()

    # -- in the hub's thread --------------------------------------------------------
    def add(self, stream: Stream) -> None:
        self._step(stream)

    def end(self, stream: Stream) -> None:
        """Stop a stream now (its relay is finishing): close what it holds."""
        if not stream.ended:
            self._close(stream, broken=False, notify=False)

    def watch(self, fd: int, fn: Callable[[], None],
              events: int = selectors.EVENT_READ) -> None:
        """Call `fn` once, in the hub's thread, when `fd` is readable (or hung up), or
        writable with `events` EVENT_WRITE."""
        self._sel.register(fd, events, _Once(self, fd, fn))

    def unwatch(self, fd: int) -> None:
        """Drop a `watch` of `fd` that has not fired (none: nothing happens)."""
        try:
            key = self._sel.get_key(fd)
        except (KeyError, ValueError):
            return
        if isinstance(key.data, _Once):
            self._sel.unregister(fd)

    def hold(self, stream: Stream) -> None:
        """Copy nothing more of `stream` until `release`: the caller's job was stopped
        (^Z), and what is typed at its terminal meanwhile is its shell's. A relay outside
        the caller's session (the daemon's) is not stopped by the kernel's job control."""
        stream.held = stream.was_held = True
        self._unregister(stream)

    def release(self, stream: Stream) -> None:
        if stream.held:
            stream.held = False
            if not stream.ended:
                self._guarded(stream)

    def set_timer(self, key: object, deadline: float, fn: Callable[[], None]) -> None:
        self._timers[key] = (deadline, fn)

    def cancel_timer(self, key: object) -> None:
        self._timers.pop(key, None)

    def _loop(self) -> None:
        # A write to a reader that left must be EPIPE for that stream, never the end of
        # the process (and every run it watches) should SIGPIPE not be ignored there:
        # blocked in this thread, the kernel's SIGPIPE for it stays pending, unseen.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGPIPE})
        while True:
            timeout: float | None = None
            if self._ready:
                timeout = 0
            elif self._timers:
                timeout = max(0.0, min(d for d, _ in self._timers.values()) - time.monotonic())
            for key, _ in self._sel.select(timeout):
                stream = key.data
                if stream is None:
                    self._run_calls()
                elif isinstance(stream, _Once):
                    stream.fire()
                elif not stream.ended:
                    self._guarded(stream)
            for _ in range(len(self._ready)):
                stream = self._ready.popleft()
                if not stream.ended:
                    self._guarded(stream)
            if self._timers:
                now = time.monotonic()
                for owner, (deadline, fn) in list(self._timers.items()):
                    if deadline <= now:
                        del self._timers[owner]
                        self._guard(fn)

    def _run_calls(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self._calls:
                    return
                fn = self._calls.popleft()
            self._guard(fn)

    @staticmethod
    def _guard(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            pass   # a relay's own failure must not end every other relay's copying

    def _guarded(self, stream: Stream) -> None:
        if stream.held or stream.ended:   # (a timer's retry may outlive its stream)
            return
        try:
            self._step(stream)
        except Exception:
            if not stream.ended:
                self._close(stream, broken=True)

    def _step(self, stream: Stream) -> None:
        """Copy what can be copied now, then wait for the side that would block."""
        src, dst, buf = stream.src, stream.dst, self._buf
        for _ in range(TURN):
            if stream.pending is not None:
                try:
                    n = dst.write(stream.pending)
                except (BlockingIOError, InterruptedError):
                    return self._wait(stream, dst, selectors.EVENT_WRITE)
                except OSError as e:
                    return self._write_failed(stream, e)
                rest = stream.pending[n:]
                stream.pending = rest if len(rest) else None
                if dst.blocking and dst.pollable:
                    return self._wait(stream, dst, selectors.EVENT_WRITE
                                      if stream.pending is not None else 0)
                continue
            try:
                n = src.read(buf)
            except (BlockingIOError, InterruptedError):
                return self._wait(stream, src, selectors.EVENT_READ)
            except OSError as e:
                if (e.errno == errno.EIO and src.terminal and stream.was_held
                        and in_background(src.fd)):   # `bg` after ^Z: wait for `fg`
                    return self.set_timer(stream, time.monotonic() + BACKGROUND_RETRY,
                                          lambda: self._guarded(stream))
                n = 0   # EIO: the pty's last slave closed, or a job started in the background
            if n == 0:
                return self._close(stream, broken=False)
            try:
                w = dst.write(buf[:n])
            except (BlockingIOError, InterruptedError):
                w = 0
            except OSError as e:
                return self._write_failed(stream, e)
            if w < n:
                stream.pending = memoryview(bytes(buf[w:n]))   # the only copy: <= CHUNK
            if src.blocking and src.pollable:
                return self._wait(stream, dst if stream.pending is not None else src,
                                  selectors.EVENT_WRITE if stream.pending is not None
                                  else selectors.EVENT_READ)
        self._wait(stream, None, 0)   # more to do: after the other streams' turn

    def _write_failed(self, stream: Stream, e: OSError) -> None:
        """The destination refused a write: its reader left (EPIPE), or it failed."""
        if e.errno not in READER_GONE:
            stream.error = e
        self._close(stream, broken=True)

    def _wait(self, stream: Stream, ep: Endpoint | None, events: int) -> None:
        old = stream.waiting
        if old is not None and (ep is None or old != (ep, events)):
            self._unregister(stream)
        if ep is None or events == 0 or not ep.pollable:
            self._ready.append(stream)
            return
        if stream.waiting is None:
            try:
                self._sel.register(ep.fd, events, stream)
            except PermissionError:   # epoll refuses it (/dev/null): always ready
                ep.pollable = False
                self._ready.append(stream)
                return
            stream.waiting = (ep, events)

    def _unregister(self, stream: Stream) -> None:
        if stream.waiting is not None:
            try:
                self._sel.unregister(stream.waiting[0].fd)
            except (KeyError, ValueError):
                pass
            stream.waiting = None

    def _close(self, stream: Stream, *, broken: bool, notify: bool = True) -> None:
        self._unregister(stream)
        stream.ended = True
        stream.pending = None
        stream.src.close()
        stream.dst.close()
        if notify:
            stream.on_end(stream, broken)


class _Once:
    """A `watch`: unregistered before its function runs."""
    __slots__ = ("hub", "fd", "fn")

    def __init__(self, hub: StdioHub, fd: int, fn: Callable[[], None]) -> None:
        self.hub, self.fd, self.fn = hub, fd, fn

    def fire(self) -> None:
        try:
            self.hub._sel.unregister(self.fd)
        except (KeyError, ValueError):
            pass
        self.hub._guard(self.fn)


def _forget(old: StdioHub) -> None:
    """In a forked child: close its copies of the parent's hub's descriptors only."""
    old._sel.close()
    for fd in (old._wake_r, old._wake_w):
        try:
            os.close(fd)
        except OSError:
            pass


# This process's hub (made at first use); a forked child has no hub thread and
# starts its own if it ever relays.
_hub: PerProcess[StdioHub] = PerProcess(StdioHub, _forget)
shared = _hub.get

