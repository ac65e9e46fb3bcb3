"""The sandbox's stdin, stdout and stderr: pipes or a pty owned by the monitor, never
the caller's own descriptors.

A descriptor passed into a sandbox is an open file description the program
can act on: `fchmod`, `ftruncate`, `futimens` and `flock` reach the *file*
behind it (a service log shared by every run, the caller's terminal, even
`/dev/null` when the caller is root). So the program only ever gets:

- a pipe the launcher made for this run (captured output, stdin from bytes or
  closed): passed through as is (``relay`` false for that stream);
- otherwise a pipe made here, whose other end the process's one relay thread
  (sandbox.monitor.stdio_hub) copies to or from the caller's descriptor, which
  stays in the monitor; one pipe for stdout and stderr when the caller's lead
  to the same file (`2>&1`), so that their order is kept;
- with a terminal (``sandbox exec -t``), a pseudo-terminal made here, outside
  the sandbox: its slave is the program's stdin, stdout and stderr and its
  controlling terminal; the master is relayed to the caller's terminal, and
  window-size changes arrive on the control channel. The program never holds
  the caller's terminal, so TIOCSTI or a changed `termios` can only reach
  its own pty.

Relaying costs one copy per chunk, in one thread shared by every run of the
process, which never blocks on any of them and holds at most one chunk per
stream (a slow reader slows its own program, never the monitor's memory or
another run's relay). The exit report is sent only after the output relays
have drained (`finish`), so a caller sees all output before the exit.

A relay never touches the process's own 0, 1 and 2: it takes the caller's
descriptors as given (`caller`), and the sandbox's ends (`sandbox`) go to the
stub as descriptors, so many runs can share one monitor process.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import os
import stat
import struct
import termios
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sandbox import fdwait
from sandbox.latch import Latch
from sandbox.monitor import stdin_lend, stdio_hub
from sandbox.monitor.stdio_hub import Endpoint, Stream, caller_end, own_end
from sandbox.protocol import TYPED_AHEAD
from sandbox.std_fds import ensure_open

DRAIN_TIMEOUT = 2.0   # seconds to finish copying output after the sandbox is gone
EOF_EVERY = 0.05      # seconds between looks at an ended pty input (`StdioRelay._type_end`)
TIOCGPTPEER = 0x5441  # linux/tty.h (4.13): the slave of a pty master, without its path


@dataclass(frozen=True)
class StdioSpec:
    """What the launcher asks for (spec["stdio"])."""
    relay: tuple[bool, bool, bool] = (True, True, True)
    tty: tuple[int, int] | None = None    # (rows, cols): make a pty of this size
    ahead: bytes = b""    # typed into the pty first: the caller's lines typed ahead

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
                   (int(tty[0]), int(tty[1])) if ok_tty and tty is not None else None,
                   _hex(raw.get("ahead")))


def _hex(text: Any) -> bytes:
    try:
        return bytes.fromhex(text)[:TYPED_AHEAD] if isinstance(text, str) else b""
    except ValueError:
        return b""


def type_ahead(master: int, slave: int, keys: bytes) -> None:
    """What the caller typed before its terminal went raw, typed into the new pty (at
    most TYPED_AHEAD bytes: its input queue takes them without blocking), without an
    echo: the caller's terminal showed them already. The line discipline handles input
    on a worker, later; a poll of the slave has it done now, while echo is off."""
    import select
    modes = termios.tcgetattr(master)
    quiet = list(modes)
    quiet[3] &= ~(termios.ECHO | termios.ECHONL)
    termios.tcsetattr(master, termios.TCSANOW, quiet)
    try:
        os.write(master, keys)
        poller = select.poll()
        poller.register(slave, select.POLLIN)
        poller.poll(0)
    finally:
        termios.tcsetattr(master, termios.TCSANOW, modes)


def set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def take_process_stdio() -> tuple[int, int, int]:
    """This process's 0, 1, 2 as the caller's descriptors of a run, and /dev/null in
    their place. Only for a process that is one run's monitor and got the caller's
    descriptors there (an exec'd monitor: sandbox.monitor.main); the monitor host
    passes each run's descriptors to `StdioRelay` instead."""
    for fd in (0, 1, 2):   # a closed one would be taken by the next descriptor made
        ensure_open(fd)
    caller = (os.dup(0), os.dup(1), os.dup(2))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return caller


class StdioRelay:
    """One run's stdio. Made before the stub is forked; `caller` are the caller's
    stdin, stdout and stderr, which the relay owns from then on (relayed, or passed
    to the sandbox as they are when not relayed)."""

    def __init__(self, spec: StdioSpec, caller: Sequence[int],
                 hub: stdio_hub.StdioHub | None = None) -> None:
        if len(caller) != 3:
            raise ValueError(f"a relay takes the caller's stdin, stdout, stderr: {caller!r}")
        self.spec = spec
        self.hub = hub or stdio_hub.shared()
        self.sandbox: list[int] = []           # the sandbox's 0, 1, 2, until `started`
        self.master: int | None = None          # the pty's master (-t), for `resize`
        self._plans: list[tuple[int, bool, int, bool]] = []   # (src, src_ours, dst, output)
        self._unused: list[int] = []            # caller descriptors nothing copies
        self._state = "made"                    # made, started, finishing, closed
        self._done_callbacks: list[Callable[[], None]] = []
        self._closed = Latch()
        self._lock = threading.Lock()
        # the hub's thread alone uses these once started:
        self._streams: list[Stream] = []
        self._outputs: list[Stream] = []
        self._outputs_left = 0
        self._finishing = False
        self._eof_timer = object()   # the hub's timer key of `_type_end`
        # a caller's stdin that is a file: to give back what the program did not read
        self._file_stdin: stdin_lend.FileStdin | None = None
        # a caller's stdin that is a pipe: the program's pipe's read end, to lend it the
        # caller's bytes rather than take them (sandbox/monitor/stdin_lend.py)
        self._lend_peek: int | None = None
        self._lender: stdin_lend.Lender | None = None
        # which of the caller's streams each output copies to (by the caller's number)
        self._out_names: dict[int, str] = {}
        self._names: dict[Stream, str] = {}
        # the first failed write to the caller's stdout or stderr other than its reader
        # leaving (ENOSPC, EIO...): the run reports it, as the program's own write
        # would have failed directly (finding H4); set in the hub's thread
        self.write_error: str | None = None
        try:
            if spec.tty is not None:
                self._make_pty(caller, *spec.tty)
            else:
                self._make_pipes(caller)
        except BaseException:
            held = {fd for plan in self._plans for fd in (plan[0], plan[2])}
            held.update(self._unused, self.sandbox)
            self._unused += [fd for fd in set(caller) if fd not in held]
            self._close_unstarted()
            raise

    def _make_pipes(self, caller: Sequence[int]) -> None:
        # stdout and stderr going to one place (`2>&1`, one terminal): one pipe for
        # both, so what the program wrote reaches it in the order it was written; two
        # relayed pipes put all of one stream before the other
        merged = self.spec.relay[1] and self.spec.relay[2] and _same_file(caller[1], caller[2])
        for i, relay in enumerate(self.spec.relay):
            if not relay:
                self.sandbox.append(caller[i])   # a pipe the launcher made for this run
                continue
            if i == 2 and merged:
                self.sandbox.append(os.dup(self.sandbox[1]))
                self._unused.append(caller[2])
                continue
            r, w = os.pipe2(os.O_CLOEXEC)
            if i == 0:
                self.sandbox.append(r)
                self._plans.append((caller[0], False, w, False))
                kind = _kind(caller[0])
                if stat.S_ISREG(kind):
                    self._file_stdin = stdin_lend.FileStdin.of(caller[0], r)
                elif stat.S_ISFIFO(kind) or (stat.S_ISSOCK(kind)
                                             and stdin_lend.lendable_socket(caller[0])):
                    stdin_lend.pipe_for_lending(w)
                    self._lend_peek = os.dup(r)
            else:
                self.sandbox.append(w)
                self._plans.append((r, True, caller[i], True))
                self._out_names[caller[i]] = ("stdout", "stderr")[i - 1]

    def _make_pty(self, caller: Sequence[int], rows: int, cols: int) -> None:
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        os.set_inheritable(slave, False)
        self.master = master
        set_winsize(master, rows or 24, cols or 80)
        if self.spec.ahead:
            type_ahead(master, slave, self.spec.ahead)
        self.sandbox = [slave, os.dup(slave), os.dup(slave)]
        # the program's stdin is the pty: whatever the launcher gave (the caller's own
        # descriptor, or a pipe of its own holding stdin bytes or nothing) is typed in
        self._plans.append((caller[0], not self.spec.relay[0], os.dup(master), False))
        self._plans.append((os.dup(master), True, caller[1], True))
        self._out_names[caller[1]] = "stdout"
        self._unused.append(caller[2])

    # -- the monitor's side ------------------------------------------------------
    def started(self) -> None:
        """The stub has its copies: let go of the sandbox's ends here (so end of stream
        comes when the sandbox's last process is gone), then hand the copying to the hub."""
        for fd in self.sandbox:
            os.close(fd)
        self.sandbox = []
        self._state = "started"
        plans, self._plans = self._plans, []
        self.hub.call(lambda: self._attach(plans))

    def resize(self, rows: int, cols: int) -> None:
        if self.master is not None and self._state in ("made", "started"):
            try:
                set_winsize(self.master, rows, cols)
            except OSError:
                pass

    def job_stopped(self, stopped: bool) -> None:
        """The caller's job was stopped (^Z: True) or continued (`fg`: False): the
        caller's terminal is not read meanwhile (`StdioHub.hold`)."""
        if self._state == "started":
            self.hub.call(lambda: self._hold_terminal(stopped))

    def finish(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """After the sandbox is gone: wait until its output reached the caller (or
        `timeout` passed: a reader that takes nothing does not hold the report)."""
        if self._state == "made":
            self._close_unstarted()
            return
        self.finish_async(timeout)
        self._closed.wait(timeout + 5.0)

    def finish_async(self, timeout: float = DRAIN_TIMEOUT,
                     done: Callable[[], None] | None = None) -> None:
        """`finish` for an event loop: `done()` is called (in the hub's thread) once the
        output is delivered or given up and every descriptor of the relay is closed."""
        if done is not None:
            with self._lock:
                if not self._closed.is_set():
                    self._done_callbacks.append(done)
                    done = None
            if done is not None:
                done()
        if self._state == "started":
            self._state = "finishing"
            deadline = time.monotonic() + timeout
            self.hub.call(lambda: self._finish_in_hub(deadline))

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- in the hub's thread -----------------------------------------------------------
    def _attach(self, plans: list[tuple[int, bool, int, bool]]) -> None:
        for fd in self._unused:
            os.close(fd)
        self._unused = []
        for src, src_ours, dst, output in plans:
            name = self._out_names.get(dst, "output")
            try:
                s_ep = own_end(src) if src_ours else caller_end(src, writing=False)
            except OSError:
                s_ep = Endpoint(src, blocking=True)
            try:
                d_ep = caller_end(dst, writing=True) if output else own_end(dst)
            except OSError:
                d_ep = Endpoint(dst, blocking=True)
            stream = Stream(s_ep, d_ep, self._stream_ended)
            self._streams.append(stream)
            if output:
                self._outputs.append(stream)
                self._names[stream] = name
            elif self._lend_peek is not None and not s_ep.blocking:
                self._lender = stdin_lend.Lender(   # never copied ahead: lent to the end
                    self.hub, s_ep.fd, d_ep.fd, self._lend_peek,
                    ended=functools.partial(self.hub.end, stream),   # its end for the program
                    lent_all=d_ep.close,            # its end once it has read what was lent
                    sock=s_ep.sock)
        self._outputs_left = len(self._outputs)
        lent = self._lender
        for stream in list(self._streams):
            if not stream.ended and (lent is None or stream in self._outputs):
                self.hub.add(stream)
        if lent is not None:
            lent.start()

    def _hold_terminal(self, stopped: bool) -> None:
        for stream in self._streams:
            if stream not in self._outputs and stream.src.terminal:
                (self.hub.hold if stopped else self.hub.release)(stream)

    def _type_end(self) -> None:
        """The caller's input to the pty has ended (`echo hi | sandbox exec -t -- cat`,
        the API's stdin bytes, `--stdin none`). A pipe's end is sticky, a terminal's is
        typed: whenever the program has read all there was, type the pty's end-of-file
        character, as a user presses ^D. A program in canonical mode reads an end (after
        a partial line, the first hands the line over), a readline-style one sees ^D on
        an empty line, and one that reads again gets another end, as from a pipe. Only
        when nothing is left unread, so at most one ever waits; it stops with the relay.
        Looked at again every EOF_EVERY seconds: a program switches modes as it reads
        (readline goes raw for each line), and the character is taken in the mode of
        the moment it is typed. The program's side is opened for each look and closed
        at once: one held open would keep the master from seeing the program's end."""
        if self.master is None or self._finishing or self._closed.is_set():
            return
        try:   # a descriptor of the pty's program side, to see its unread input
            peer = fcntl.ioctl(self.master, TIOCGPTPEER,
                               os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return
        try:
            if not fdwait.readable([peer], 0):
                eof = termios.tcgetattr(peer)[6][termios.VEOF]
                os.write(self.master, eof if isinstance(eof, bytes) and eof != b"\0"
                         else b"\x04")
        except BlockingIOError:
            pass            # its input is full: it reads nothing now, look again later
        except OSError:
            return          # the pty hung up: its program is gone
        finally:
            os.close(peer)
        self.hub.set_timer(self._eof_timer, time.monotonic() + EOF_EVERY, self._type_end)

    def _stream_ended(self, stream: Stream, broken: bool) -> None:
        if stream in self._outputs:
            self._outputs_left -= 1
            if stream.error is not None and self.write_error is None:
                self.write_error = _write_error(self._names.get(stream, "output"),
                                                stream.error)
            if broken and self.master is not None:
                # The caller's terminal is gone: a program writing to its pty would
                # wait forever on a master nobody reads. Hang it up instead.
                for other in self._streams:
                    self.hub.end(other)
                self._close_master()
        elif not broken and self.master is not None:
            self._type_end()      # the caller's input to the pty ended
        self._maybe_done()

    def _finish_in_hub(self, deadline: float) -> None:
        self._finishing = True
        for stream in self._streams:      # the sandbox is gone: its input is moot
            if stream not in self._outputs:
                self._give_back(stream)
                if self._lender is not None:
                    self._lender.settle()
                self.hub.end(stream)
        if self._outputs_left <= 0:
            self._teardown()
        else:
            self.hub.set_timer(self, deadline, self._teardown)

    def _give_back(self, stream: Stream) -> None:
        if self._file_stdin is not None:
            pending = stream.pending if not stream.ended else None
            self._file_stdin.give_back(len(pending) if pending is not None else 0)

    def _close_stdin_held(self) -> None:
        """What the relay holds to hand stdin back: the file's, the pipe's read end."""
        if self._file_stdin is not None:
            self._file_stdin.close()
            self._file_stdin = None
        if self._lend_peek is not None:
            os.close(self._lend_peek)
            self._lend_peek = None

    def _maybe_done(self) -> None:
        if self._finishing and self._outputs_left <= 0:
            self._teardown()

    def _teardown(self) -> None:
        if self._closed.is_set():
            return
        self.hub.cancel_timer(self)
        self.hub.cancel_timer(self._eof_timer)
        for stream in self._streams:
            self.hub.end(stream)
        self._streams, self._outputs, self._names = [], [], {}
        self._close_master()
        self._close_stdin_held()
        self._state = "closed"
        with self._lock:
            self._closed.set()
            callbacks, self._done_callbacks = self._done_callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                pass

    def _close_master(self) -> None:
        if self.master is not None:
            master, self.master = self.master, None
            os.close(master)

    def _close_unstarted(self) -> None:
        """Never started (the run failed before its stub): close everything here."""
        for src, _, dst, _ in self._plans:
            for fd in (src, dst):
                try:
                    os.close(fd)
                except OSError:
                    pass
        for fd in [*self._unused, *self.sandbox]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._plans, self._unused, self.sandbox = [], [], []
        self._close_master()
        self._close_stdin_held()
        self._state = "closed"
        self._closed.set()


def _write_error(name: str, e: OSError) -> str:
    """The one line a run reports for a failed write to the caller's `name`."""
    code = errno.errorcode.get(e.errno or 0, "")
    return (f"writing the program's {name}: {e.strerror or e}"
            + (f" ({code})" if code else ""))


def _same_file(a: int, b: int) -> bool:
    """Do descriptors `a` and `b` lead to the same file (a pipe, a terminal, a file)?"""
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _kind(fd: int) -> int:
    """The file type bits of `fd` (0 when it is not open)."""
    try:
        return stat.S_IFMT(os.fstat(fd).st_mode)
    except OSError:
        return 0


def dup_or_null(fd: int) -> int:
    """A close-on-exec copy of the caller's descriptor; /dev/null when none is open there."""
    try:
        return os.dup(fd)
    except OSError:
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
