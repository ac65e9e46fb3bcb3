"""The sandbox's stdin, stdout and stderr: pipes or a pty owned by the monitor, never
the caller's own descriptors.

A descriptor passed into a sandbox is an open file description the program
can act on: `fchmod`, `ftruncate`, `futimens` and `flock` reach the *file*
behind it (a service log shared by every run, the caller's terminal, even
`/dev/null` when the caller is root). So the program only ever gets:

- a pipe the launcher made for this run (captured output, stdin from bytes or
  closed): passed through as is (``relay`` false for that stream);
- otherwise a pipe made here, whose other end a relay thread copies to or
  from the caller's descriptor, which stays in the monitor;
- with a terminal (``sandbox exec -t``), a pseudo-terminal made here, outside
  the sandbox: its slave is the program's stdin, stdout and stderr and its
  controlling terminal; the master is relayed to the caller's terminal, and
  window-size changes arrive on the control channel. The program never holds
  the caller's terminal, so TIOCSTI or a changed `termios` can only reach
  its own pty.

Relaying costs one copy per chunk; the threads block in read/write (the
monitor's loop never waits on them) and the exit report is sent only after
the output relays have drained, so a caller sees all output before the exit.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
import threading
from dataclasses import dataclass
from typing import Any

CHUNK = 65536
DRAIN_TIMEOUT = 2.0   # seconds to finish copying output after the sandbox is gone


@dataclass(frozen=True)
class StdioSpec:
    """What the launcher asks for (spec["stdio"])."""
    relay: tuple[bool, bool, bool] = (True, True, True)
    tty: tuple[int, int] | None = None    # (rows, cols): make a pty of this size

    @classmethod
    def from_spec(cls, raw: Any) -> "StdioSpec":
        if not isinstance(raw, dict):
            return cls()
        relay = raw.get("relay", (True, True, True))
        tty = raw.get("tty")
        ok_tty = (isinstance(tty, (list, tuple)) and len(tty) == 2
                  and all(isinstance(v, int) and 0 <= v < 1 << 16 for v in tty))
        return cls(tuple(bool(r) for r in relay[:3]) if isinstance(relay, (list, tuple))
                   and len(relay) == 3 else (True, True, True),  # type: ignore[arg-type]
                   (int(tty[0]), int(tty[1])) if ok_tty and tty is not None else None)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class StdioRelay:
    """Made before the stub is forked (from the monitor's 0, 1, 2 = the caller's)."""

    def __init__(self, spec: StdioSpec) -> None:
        self.spec = spec
        self.caller = [_dup_or_null(fd) for fd in (0, 1, 2)]   # close-on-exec copies
        for fd in (0, 1, 2):   # a closed one would be taken by the next pipe we make
            ensure_open(fd)
        self.sandbox: list[int] = []                     # the sandbox's 0, 1, 2
        self._mine: list[int] = []                       # our ends of the relays
        self._threads: list[threading.Thread] = []
        self._outputs: list[threading.Thread] = []
        self.master: int | None = None
        if spec.tty is not None:
            self._make_pty(*spec.tty)
        else:
            self._make_pipes()

    def _make_pipes(self) -> None:
        for i, relay in enumerate(self.spec.relay):
            if not relay:
                self.sandbox.append(os.dup(self.caller[i]))
                continue
            r, w = os.pipe2(os.O_CLOEXEC)
            if i == 0:
                self.sandbox.append(r)
                self._plan(self.caller[0], w, close_dst=True, output=False)
            else:
                self.sandbox.append(w)
                self._plan(r, self.caller[i], close_dst=False, output=True)

    def _make_pty(self, rows: int, cols: int) -> None:
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        os.set_inheritable(slave, False)
        set_winsize(master, rows or 24, cols or 80)
        self.master = master
        self.sandbox = [slave, os.dup(slave), os.dup(slave)]
        if self.spec.relay[0]:
            self._plan(self.caller[0], master, close_dst=False, output=False)
        self._plan(master, self.caller[1], close_dst=False, output=True)

    def _plan(self, src: int, dst: int, *, close_dst: bool, output: bool) -> None:
        t = threading.Thread(target=self._copy, args=(src, dst, close_dst), daemon=True,
                             name="stdio-out" if output else "stdio-in")
        self._threads.append(t)
        if output:
            self._outputs.append(t)
            self._mine.append(src)
        elif close_dst:
            self._mine.append(dst)

    # -- the monitor's side ------------------------------------------------------
    def install_as_stdio(self) -> None:
        """Make the sandbox's ends this process's 0, 1, 2, for a stub forked next."""
        for src, dst in zip(self.sandbox, (0, 1, 2)):
            os.dup2(src, dst)

    def started(self) -> None:
        """The stub has its copies: let go of the sandbox's ends here (so end of stream
        comes when the sandbox's last process is gone), then start copying."""
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        for fd in self.sandbox:
            os.close(fd)
        self.sandbox = []
        for t in self._threads:
            t.start()

    def resize(self, rows: int, cols: int) -> None:
        if self.master is not None:
            try:
                set_winsize(self.master, rows, cols)
            except OSError:
                pass

    def finish(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """After the sandbox is gone: wait for the output to reach the caller."""
        for t in self._outputs:
            t.join(timeout)
        for fd in self.caller[1:]:
            try:
                os.close(fd)
            except OSError:
                pass

    @staticmethod
    def _copy(src: int, dst: int, close_dst: bool) -> None:
        try:
            while True:
                try:
                    data = os.read(src, CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EINTR:
                        continue
                    break   # EIO: the pty's last slave descriptor closed
                if not data:
                    break
                view = memoryview(data)
                while view:
                    try:
                        n = os.write(dst, view)
                    except InterruptedError:
                        continue
                    except BlockingIOError:
                        _wait_writable(dst)
                        continue
                    view = view[n:]
        except OSError:
            pass    # the reader went away (EPIPE): stop copying
        finally:
            if close_dst:
                try:
                    os.close(dst)
                except OSError:
                    pass


def _dup_or_null(fd: int) -> int:
    """A copy of the caller's descriptor; /dev/null when the caller had none open there."""
    try:
        return os.dup(fd)
    except OSError:
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def ensure_open(fd: int) -> None:
    """`fd` open: a closed standard descriptor becomes /dev/null, so nothing
    opened later takes its number and is mistaken for it."""
    try:
        os.fstat(fd)
    except OSError:
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def _wait_writable(fd: int) -> None:
    import select
    select.select([], [fd], [], 1.0)
