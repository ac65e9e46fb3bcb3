"""A caller's stdin, left to its next reader where the program stopped reading.

WHY: the relay reads ahead of the program (a chunk, and the program's pipe), so
`find . | while read f; do sandbox exec -- lint "$f"; done` went round once: the
first run's relay took the whole list, which the program never read. Directly, a
program that does not read its stdin leaves it to the loop's next `read`. A file
is given back afterwards (`FileStdin`: its offset moved back over what the
program did not take); a pipe or a socket cannot be, so its bytes are *lent*
(`Lender`): copied into the program's pipe without being taken (tee(2) from a
pipe, recv(MSG_PEEK) from a stream socket), and taken (read and dropped) from the
caller's only once the program has read them.

Lent for the whole run, never copied ahead: the relay used to switch to copying
(`Stream`, a chunk and a pipe's worth ahead) once the program had read its first
64 KiB, and lost what it had read ahead and the program had not (finding H1:
`head -c 100000` of a 5 MB pipe left 81919 bytes fewer than directly). Neither
tee nor a peek can start past the bytes already lent, so the next lending waits
until the program has read all of the last one. The program's pipe is one page
(`pipe_for_lending`), so "writable" means "empty": the hub's epoll reports the
moment the program has read everything lent, with no timer and no polling. One
page a round: a program reading a stream costs one tee and one read per 4 KiB.

Only the hub's thread reads the caller's pipe or socket during the run. What the
program controls is only what is left in its pipe, and it can add to it (its
stdin reopened for writing through /proc/self/fd/0): so what is taken is never
more than was lent, and a pipe fuller than lent is taken from not at all.
A datagram socket is not lent (its reads are whole messages): it is copied.

The program holds the read end of its pipe, so it can resize it (F_SETPIPE_SZ):
a bigger pipe is writable while it still holds what was lent, and the hub
looked again at once, for ever (a sleeping program kept the monitor at 87% of
a CPU, outside its limits: `tests/test_stdin_lend_costs.py`). So every look
puts the pipe back to one page first (`fit`: the kernel shrinks a pipe holding
at most that much); one holding more (the program wrote into it) is looked at
again after `RECHECK` seconds, not at once.
"""
from __future__ import annotations

import fcntl
import os
import select
import selectors
import socket
import struct
import termios
import time
from dataclasses import dataclass
from typing import Callable

from sandbox.isolation import libc
from sandbox.monitor.stdio_hub import StdioHub

LEND_MAX = 4096     # the most lent at once: the program's pipe holds one page
RECHECK = 0.05      # seconds between looks at a pipe the program keeps over one page


def pipe_for_lending(write_end: int) -> None:
    """Make the program's stdin pipe one page: writable exactly when it is empty."""
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, LEND_MAX)


def fit(write_end: int) -> bool:
    """Is the program's stdin pipe one page again (see the module's docstring)? Put it
    back when the program grew it; False when it holds more than a page."""
    if fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ) <= LEND_MAX:
        return True
    try:
        pipe_for_lending(write_end)
    except OSError:       # EBUSY: more than one page in it
        return False
    return True


def lendable_socket(fd: int) -> bool:
    """Is `fd` a stream socket (whose bytes a peek can lend)?"""
    try:
        return socket.socket(fileno=os.dup(fd)).type == socket.SOCK_STREAM
    except OSError:
        return False


def _hung_up(fd: int) -> bool:
    """Has every writer of the pipe `fd` is a read end of gone?"""
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLHUP for _, ev in p.poll(0))


def unread(fd: int) -> int:
    """Bytes waiting in the pipe `fd` is an end of."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0])


class Lender:
    """Lends `src` (the caller's pipe, a description of the monitor's own, or its
    stream socket `sock`) to `dst` (the program's one-page pipe, whose read end
    `peek` the monitor also holds). Calls `ended()` when `src` ended or failed
    (then close `dst`), or `lent_all()` when the pipe `src` has ended and all it
    held is lent (then close `dst`); one of them, and none after `settle`."""

    def __init__(self, hub: StdioHub, src: int, dst: int, peek: int,
                 ended: Callable[[], None], lent_all: Callable[[], None],
                 sock: socket.socket | None = None) -> None:
        self.hub, self.src, self.dst, self.peek, self.sock = hub, src, dst, peek, sock
        self.ended, self.lent_all = ended, lent_all
        self.lent = 0
        self.done = False
        self.watching: int | None = None    # the descriptor a `watch` of ours is on
        self.timed = False                  # a timer of ours is set (`_wait_empty`)
        self.pipe = os.fstat(dst).st_ino     # which pipe `dst` is (a timer checks it)

    def start(self) -> None:
        self._look()

    def _look(self) -> None:
        self.watching = None                    # a watch fires once
        self.timed = False                      # and so does a timer
        if self.done:
            return
        try:
            one_page = fit(self.dst)
            if self.lent:
                if unread(self.peek):           # not all read yet (or the program's own)
                    return self._wait_empty(one_page)
                self._take(self.lent)           # it read all it was lent
                self.lent = 0
            if unread(self.peek):               # it wrote into its own pipe: wait it out
                return self._wait_empty(one_page)
            n = self._lend()
            if n == 0:                          # the caller's stdin ended
                self.done = True
                self.ended()
                return
            self.lent = n
            if self.sock is None and _hung_up(self.src) and unread(self.src) == n:
                # the caller's pipe has ended and all it held is lent: the program
                # gets its end now (`echo hi | sandbox exec -- cat`), with no look
                # to wait for; `settle` takes what it read
                self.lent_all()
                return
            self._wait_empty(one_page)
        except BlockingIOError:                 # nothing to lend yet: wait for some
            self._wait(self.src, selectors.EVENT_READ)
        except OSError:
            self.done = True
            self.ended()

    def _lend(self) -> int:
        if self.sock is None:
            return libc.tee(self.src, self.dst, LEND_MAX)
        data = self.sock.recv(LEND_MAX, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return os.write(self.dst, data) if data else 0   # the empty page takes it all

    def _wait(self, fd: int, events: int) -> None:
        self.hub.watch(fd, self._look, events)
        self.watching = fd

    def _wait_empty(self, one_page: bool) -> None:
        """Look again once the program's pipe is empty: when it is writable, if it is one
        page; else (the program keeps more than a page in it) after RECHECK seconds."""
        if one_page:
            return self._wait(self.dst, selectors.EVENT_WRITE)
        self.hub.set_timer(self, time.monotonic() + RECHECK, self._timed_look)
        self.timed = True

    def _timed_look(self) -> None:
        """A timer's look, only while `dst` is still the program's pipe: unlike a watch,
        which the kernel drops with the descriptor, a timer outlives a close."""
        try:
            same = os.fstat(self.dst).st_ino == self.pipe
        except OSError:
            same = False
        if not same:
            self.timed, self.done = False, True
            return
        self._look()

    def settle(self) -> None:
        """The sandbox is gone: take from the caller's stdin what the program read."""
        if self.done:
            return
        self.done = True
        if self.watching is not None:
            self.hub.unwatch(self.watching)
            self.watching = None
        if self.timed:
            self.hub.cancel_timer(self)
            self.timed = False
        if self.lent:
            try:
                self._take(self.lent - unread(self.peek))
            except OSError:
                pass

    def _take(self, n: int) -> None:
        """Read and drop `n` bytes of the caller's stdin: the ones lent, which no one
        else has read (the caller waits for this run)."""
        while n > 0:
            try:
                got = (self.sock.recv(min(n, LEND_MAX), socket.MSG_DONTWAIT)
                       if self.sock is not None else os.read(self.src, min(n, LEND_MAX)))
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
