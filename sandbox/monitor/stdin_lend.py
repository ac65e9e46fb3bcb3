"""A caller's stdin, left to its next reader where the program stopped reading.

WHY: the relay reads ahead of the program (a chunk, and the program's pipe), so
`find . | while read f; do sandbox exec -- lint "$f"; done` went round once: the
first run's relay took the whole list, which the program never read. Directly, a
program that does not read its stdin leaves it to the loop's next `read`. A file
is given back afterwards (`FileStdin`: its offset moved back over what the
program did not take); a pipe cannot be, so its bytes are *lent* (`Lender`):
tee(2) copies what the caller's pipe holds into the program's pipe without
taking it, and the monitor takes (reads and drops) from the caller's pipe only
what the program read, seen as what left the program's pipe (FIONREAD on a
descriptor of its read end that the monitor keeps).

Once the program has read everything it was lent, it reads its stdin: the lent
bytes are taken and the rest is copied as every other stream is (`Stream`, read
ahead). If the sandbox ends first, only what it read is taken. An empty caller's
pipe is waited for by the hub's epoll (`StdioHub.watch`); what the program has
read is no event it reports, so the lender looks on the hub's timers:
LOOK_FIRST after the lending, doubling to LOOK_MAX. A program reading a stream
pays a few milliseconds once; one that reads later waits at most LOOK_MAX for
its second chunk; one that never reads costs a look every LOOK_MAX.

Only the caller's pipe or FIFO is lent (not a terminal, socket or file), and only
by the hub's thread, which alone reads that pipe during the run. What the
program controls is only what is left in its pipe, and it can add to it (its
stdin reopened for writing through /proc/self/fd/0): so what is taken is never
more than was lent, and a pipe fuller than lent is taken from not at all.
"""
from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import time
from dataclasses import dataclass
from typing import Callable

from sandbox.isolation import libc
from sandbox.monitor.stdio_hub import StdioHub

LOOK_FIRST = 0.001   # seconds after a lending before the first look at what was read
LOOK_MAX = 0.05      # the longest wait between looks
LEND_MAX = 1 << 16   # the most lent at once: the program's pipe holds it


def _hung_up(fd: int) -> bool:
    """Has every writer of the pipe `fd` is a read end of gone?"""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


def unread(fd: int) -> int:
    """Bytes waiting in the pipe `fd` is an end of."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])


class Lender:
    """Lends `src` (the caller's pipe, a description of the monitor's own) to `dst`
    (the program's pipe, whose read end `peek` the monitor also holds). Calls
    `reader()` once the program has read all it was lent (then copy eagerly),
    `ended()` when `src` ended or failed before that, or `lent_all()` when `src`
    has ended and all it held is lent (then close `dst`); one of them, and none
    after `settle`."""

    def __init__(self, hub: StdioHub, src: int, dst: int, peek: int,
                 reader: Callable[[], None], ended: Callable[[], None],
                 lent_all: Callable[[], None]) -> None:
        self.hub, self.src, self.dst, self.peek = hub, src, dst, peek
        self.reader, self.ended, self.lent_all = reader, ended, lent_all
        self.lent = 0
        self.every = LOOK_FIRST
        self.done = False

    def start(self) -> None:
        self._look()

    def _look(self) -> None:
        if self.done:
            return
        try:
            if self.lent:
                if unread(self.peek) == 0:      # it read all it was lent: a reader
                    self._take(self.lent)
                    self.lent = 0
                    self.done = True
                    self.reader()
                    return
            else:
                n = libc.tee(self.src, self.dst, LEND_MAX)
                if n == 0:                      # the caller's pipe ended
                    self.done = True
                    self.ended()
                    return
                self.lent, self.every = n, LOOK_FIRST
                if _hung_up(self.src) and unread(self.src) == n:
                    # the caller's pipe has ended and all it held is lent: the program
                    # gets its end now (`echo hi | sandbox exec -- cat`), with no look
                    # to wait for; `settle` takes what it read
                    self.lent_all()
                    return
        except BlockingIOError:
            if not self.lent:                   # nothing to lend yet: wait for some
                self.hub.watch(self.src, self._look)
                return
        except OSError:
            self.done = True
            self.ended()
            return
        self.hub.set_timer(self, time.monotonic() + self.every, self._look)
        self.every = min(self.every * 2, LOOK_MAX)

    def settle(self) -> None:
        """The sandbox is gone: take from the caller's pipe what the program read."""
        if self.done:
            return
        self.done = True
        self.hub.cancel_timer(self)
        self.hub.unwatch(self.src)
        if self.lent:
            try:
                self._take(self.lent - unread(self.peek))
            except OSError:
                pass

    def _take(self, n: int) -> None:
        """Read and drop `n` bytes of the caller's pipe: the ones tee copied, which no
        one else has read (the caller waits for this run)."""
        while n > 0:
            try:
                got = os.read(self.src, min(n, LEND_MAX))
            except BlockingIOError:
                return
            if not got:
                return
            n -= len(got)


@dataclass
class FileStdin:
    """A caller's stdin that is a file: a description of it (`held`, the caller's own
    open file), the program's pipe (`peek`, its read end), and the offset the run
    began at."""
    held: int
    peek: int
    start: int

    @classmethod
    def of(cls, caller: int, pipe_read_end: int) -> "FileStdin | None":
        try:
            start = os.lseek(caller, 0, os.SEEK_CUR)
        except OSError:
            return None           # not seekable after all (a /proc file): as a pipe
        return cls(os.dup(caller), os.dup(pipe_read_end), start)

    def give_back(self, pending: int) -> None:
        """The sandbox is gone: move the file's offset back over what the program did
        not take (still in its pipe, and `pending` bytes read and not yet written),
        never before where the run began: the program can write into its own pipe
        (through /proc/self/fd/0) and seem to have read less than nothing."""
        try:
            back = min(unread(self.peek) + pending,
                       os.lseek(self.held, 0, os.SEEK_CUR) - self.start)
            if back > 0:
                os.lseek(self.held, -back, os.SEEK_CUR)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.held)
        os.close(self.peek)
