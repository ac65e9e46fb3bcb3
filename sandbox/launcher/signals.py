"""Relaying the caller's signals and terminal size to a running sandbox.

`sandbox exec` is a stand-in for the program: a SIGTERM from a service
manager, a SIGHUP from a closed terminal, a ^C with stdin not a terminal, all
meant for the program. The launcher catches them (main thread only, for the
run's duration) and sends each on the control channel; the monitor signals
the sandbox's init, which forwards it to the program. With a pty (`-t`),
keystrokes such as ^C travel as bytes and the pty's line discipline signals
the program itself; the window size (SIGWINCH) is relayed, and a ^Z that stops
the program comes back as the monitor's ProgramStopped: the caller's terminal is
given back as it was and the caller's job stops (`Forwarder.program_stopped`),
until `fg` continues it.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import struct
import termios
import threading
from types import FrameType
from typing import Any, Callable, Protocol

from sandbox import group_signals, protocol

FORWARDED = group_signals.RELAYED   # every signal a caller may send its whole group
JOB_CONTROL = group_signals.JOB_CONTROL   # ^Z and fg, without a pty (group_signals)
PYTHONS_OWN = group_signals.PYTHONS_OWN   # ignored by Python, not the caller: relayed


def window_size() -> tuple[int, int]:
    """(rows, cols) of the caller's terminal, (24, 80) when there is none."""
    for fd in (0, 1, 2):
        try:
            rows, cols, _, _ = struct.unpack(
                "HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        except OSError:
            continue
        if rows and cols:
            return rows, cols
    return 24, 80


_held: list[int] = []   # signals taken before a run could relay them (`hold`)


def _keep(sig: int, _frame: FrameType | None) -> None:
    _held.append(int(sig))


def hold() -> None:
    """From now on (main thread), every signal a Forwarder relays that the caller does not
    ignore is kept, not acted on, until the next Forwarder relays it: a warm run's fork
    (sandbox.thin.fork) takes the client's signals from its very start, where they had
    their default action and killed the fork (a silent 125) or were dropped (the program
    ran on to exit 0: probe4 H9)."""
    for sig in FORWARDED + JOB_CONTROL:
        if signal.getsignal(sig) is not signal.SIG_IGN or sig in PYTHONS_OWN:
            signal.signal(sig, _keep)


class Control(Protocol):
    """What the forwarder needs of the run's session (sandbox.launcher.session)."""
    on_stopped: Callable[[], None] | None

    def send_msg(self, msg: protocol.Signal | protocol.WinSize) -> None: ...


class Terminal(Protocol):
    """The caller's terminal made raw for `-t` (RawTerminal)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Forwarder:
    """While entered (in the main thread): the caller's signals go to the program."""

    def __init__(self, session: Control, *, tty: bool = False, stop_self: bool = True,
                 terminal: Terminal | None = None, client: int | None = None) -> None:
        self.session = session
        self.tty = tty
        self.stop_self = stop_self   # False in a warm fork: its client stops itself
        self.terminal = terminal     # with -t: given back while the job is stopped
        self.client = client         # a warm fork's client (pid), which stops for it
        self._saved: dict[int, Any] = {}
        self._send_lock = threading.Lock()   # the main thread's and `_watch`'s sends
        self._watching: threading.Event | None = None   # set: stop watching

    def _forward(self, sig: int, _frame: FrameType | None, *, hold_input: bool = False) -> None:
        with self._send_lock:
            self.session.send_msg(protocol.Signal(int(sig), hold_input))

    def _stop(self, sig: int, _frame: FrameType | None) -> None:
        """^Z (or `kill -TSTP`): the program's group stops, then this process, as the
        shell's job (group_signals.JOB_CONTROL)."""
        self._unwatch()
        self._forward(sig, _frame)
        if self.stop_self:
            os.kill(os.getpid(), signal.SIGSTOP)

    def _resumed(self, sig: int, frame: FrameType | None) -> None:
        """SIGCONT of a job without a pty: `fg`, or `bg`. A warm fork's relay is outside the
        caller's session, where job control does not refuse its reads of the caller's
        terminal (the cold monitor's are: stdio_hub.in_background), so after `bg` the
        program runs on with that input held, and what is typed is the shell's, until
        the client's group has the terminal again. `fg` of a running job sends no
        signal: that is watched for (`_watch`)."""
        if self.client and not foreground(self.client):
            self._forward(sig, frame, hold_input=True)
            self._watch()
        else:
            self._unwatch()
            self._forward(sig, frame)

    def _watch(self) -> None:
        """Until the client's group has its terminal again (`fg`), or the job is stopped
        again, or the run ends: then SIGCONT once more, which releases the input."""
        if self._watching is not None:
            return
        done = self._watching = threading.Event()
        client = self.client or 0

        def watch() -> None:
            while not done.wait(0.1):
                if foreground(client):
                    if not done.is_set():
                        self._forward(signal.SIGCONT, None)
                    break
            if self._watching is done:
                self._watching = None
        threading.Thread(target=watch, name="sandbox-fg-watch", daemon=True).start()

    def _unwatch(self) -> None:
        if self._watching is not None:
            self._watching.set()
            self._watching = None

    def program_stopped(self) -> None:
        """With a pty, the program stopped (its ^Z, or a stop signal): as at a terminal,
        the caller's job stops too. The caller's terminal is given back as it was (its
        shell is to read it), then this process stops, or, in a warm fork, its client,
        whose SIGTSTP handler stops it (sandbox/thin/client.py, client.c). `fg` sends
        the job SIGCONT: `_continued`. Only `sandbox exec` (its terminal given) stands in
        for the program so: an API caller waits, as for a stopped child."""
        if self.terminal is not None:
            self.terminal.pause()
            self._stop_job()

    def _stop_job(self) -> None:
        if self.stop_self:
            os.kill(os.getpid(), signal.SIGSTOP)
        elif self.client:
            try:
                os.kill(self.client, signal.SIGTSTP)
            except OSError:
                pass   # the client is gone: its hangup ends the run

    def _continued(self, sig: int, frame: FrameType | None) -> None:
        """`fg`: the terminal raw again for the program, which continues. After `bg` the
        job does not have the terminal: it stops again, as a direct program that sets
        its terminal's modes does (SIGTTOU: "Stopped (tty output)"), until `fg`."""
        if self.terminal is not None:
            if not foreground(self.client or os.getpid()):
                return self._stop_job()
            self.terminal.resume()
        self._forward(sig, frame)

    def _winch(self, _sig: int, _frame: FrameType | None) -> None:
        rows, cols = window_size()
        self.session.send_msg(protocol.WinSize(rows, cols))

    def __enter__(self) -> "Forwarder":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in FORWARDED:
            if signal.getsignal(sig) is signal.SIG_IGN and sig not in PYTHONS_OWN:
                continue   # the caller ignores it (nohup): so does the program (caller_state)
            self._saved[sig] = signal.signal(sig, self._forward)
        while _held:   # taken before this run could relay them (`hold`): the program's
            self._forward(_held.pop(0), None)
        if self.tty:
            self._saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._winch)
            # ^Z is a key for the program's own pty, whose stop comes back to
            # `program_stopped`; a SIGTSTP sent to this process stops the program first
            # (so does a warm client's, relayed here), and SIGCONT continues it
            handlers: dict[int, Any] = {signal.SIGTSTP: self._forward,
                                        signal.SIGCONT: self._continued}
            self.session.on_stopped = self.program_stopped
        else:
            handlers = {signal.SIGTSTP: self._stop, signal.SIGCONT: self._resumed}
        for sig in JOB_CONTROL:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._saved[sig] = signal.signal(sig, handlers[sig])
        return self

    def __exit__(self, *exc: object) -> None:
        self._unwatch()
        self.session.on_stopped = None
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)   # in a warm fork `_keep`: a late one is dropped
        self._saved.clear()


def typed_ahead(fd: int, lflag: int, cc: list[bytes | int],
                limit: int = protocol.TYPED_AHEAD) -> bytes:
    """The whole lines a canonical terminal (`lflag`, `cc`: its modes) holds, as typed:
    a read in canonical mode returns one line, ended by its newline, or by the
    end-of-input key (^D), which the read consumes: that key is given back as the
    terminal's VEOF character. A partial
    line is left where it is (raw mode hands it over as it is). Never blocks: a line
    is read only when poll says one is ready."""
    import select
    if not lflag & termios.ICANON:
        return b""
    veof = cc[termios.VEOF]
    eof = veof if isinstance(veof, bytes) else bytes([veof])
    ends = {b"\n", *(c for c in (cc[termios.VEOL], cc[termios.VEOL2])
                     if isinstance(c, bytes) and c != b"\0")}
    got = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while len(got) < limit and poller.poll(0):
        room = limit - len(got)
        try:
            line = os.read(fd, room)
        except OSError:
            break
        if len(line) == room and line[-1:] not in ends:
            got += line    # a line longer than the room: its rest stays, no end added
            break
        got += line if line[-1:] in ends or eof == b"\0" else line + eof
        if not line:
            break   # end of input: what follows is for a later reader
    return got[:limit]


def proc_terminal(pid: int) -> tuple[int, int, int] | None:
    """(pgrp, tty_nr, tpgid) of `pid`, from /proc/PID/stat (fields 5, 7, 8): what a
    warm fork knows of its client's terminal, which is not its own."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[2]), int(fields[4]), int(fields[5])
    except (IndexError, ValueError):
        return None


def foreground(pid: int) -> bool:
    """Whether the process `pid`'s group has its terminal (tpgid, the terminal's
    foreground group, is its pgrp); True when that cannot be read."""
    got = proc_terminal(pid)
    return got is None or got[2] == got[0]


def _retrying(fn: Callable[[], None]) -> None:
    """A termios call, again when a signal interrupted it (termios does not retry)."""
    while True:
        try:
            return fn()
        except termios.error as exc:
            if exc.args[:1] != (errno.EINTR,):
                raise


class RawTerminal:
    """The caller's terminal in raw mode for `-t`: every key goes to the program's pty,
    whose own line discipline interprets it. Restored on exit.

    Lines typed ahead are taken first, in canonical mode, into `ahead` (the launcher
    types them into the program's pty): made raw, the terminal would hand them over
    with each end-of-input (^D) turned into a NUL byte, which the program read and
    then waited for an end that never came (`script -qec 'sandbox exec -- cat'
    /dev/null </dev/null` printed ^@ and hung; found by the everyday probe)."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self._saved: list[Any] | None = None
        self.ahead = b""

    def __enter__(self) -> "RawTerminal":
        if os.isatty(self.fd):
            import tty
            self._saved = termios.tcgetattr(self.fd)
            self.ahead = typed_ahead(self.fd, self._saved[3], self._saved[6])   # lflag, cc
            tty.setraw(self.fd, termios.TCSADRAIN)   # not TCSAFLUSH: keep keys typed ahead
        return self

    def pause(self) -> None:
        """The terminal as it was, while the caller's job is stopped (^Z)."""
        saved = self._saved
        if saved is not None:
            _retrying(lambda: termios.tcsetattr(self.fd, termios.TCSADRAIN, saved))

    def resume(self) -> None:
        """Raw again once the job continues."""
        if self._saved is not None:
            import tty
            _retrying(lambda: tty.setraw(self.fd, termios.TCSADRAIN))

    def __exit__(self, *exc: object) -> None:
        self.pause()
