"""The caller's side of a run, as the monitor hears it: the launcher's control messages
(cancel, a signal, the terminal's size) and the caller's signals relayed to the program.

What must hold:

- **Nothing is lost before PID 1 is Ready.** A signal that comes earlier is kept
  (at most 64) and sent once PID 1 said Ready (setup_messages.py); before, a ^C
  right after `sandbox exec` started was dropped and the program ran to its end
  (probe4 H9). Every message read with another is handled in the same turn.
- **Never by number.** A signal goes to PID 1 through its pidfd (`tree.send`),
  which forwards it to PID 2; SIGKILL and SIGSTOP are the monitor's, never relayed.
- **A stop is said once.** The init reports PID 2 stopped at its pty (^Z); the
  launcher hears it once until the caller continues the job (a SIGCONT relayed), so
  a program stopping itself in a loop costs the launcher one message.
- **A launcher that says something else is gone.** A message outside the three, or
  the channel's end, ends the sandbox.

Split from supervisor.py, whose `on_ctl` (the host's callback) calls `handle`.
"""
from __future__ import annotations

import signal
from typing import Any, Protocol

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.ipc.channel import Channel
from sandbox.monitor import tree
from sandbox.monitor.stdio import StdioRelay
from sandbox.protocol import Cancel, ExitReport, ProgramStopped, Signal, WinSize

EARLY_MAX = 64   # signals kept before PID 1 is Ready


class Run(Protocol):
    """What this module reads and sets of a run (sandbox.monitor.supervisor.Supervisor)."""
    ctl: Channel
    host: Any                # supervisor.HostLoop
    host_watches_ctl: bool
    report: ExitReport
    stdio: StdioRelay | None
    early_signals: list[int] | None
    pid1: int | None
    pid1_fd: int | None
    stop_said: bool

    def kill(self) -> None: ...


def handle(sup: Run) -> None:
    """Every message of the launcher's that has arrived: the one the socket's readiness
    announced and those read with it (a Signal right behind the Spec, or two signals,
    sat in the channel unseen: probe4 H9's lost early ^C)."""
    _one(sup)
    while sup.ctl.buffered() and sup.host_watches_ctl:
        _one(sup)


def _one(sup: Run) -> None:
    msg = read(sup.ctl)
    if msg is None:
        sup.host.unwatch(sup.ctl.sock)
        sup.host_watches_ctl = False
        sup.kill()
    elif isinstance(msg, Cancel):
        sup.report.cancelled = True
        sup.kill()
    elif isinstance(msg, Signal):
        relay_signal(sup, msg.signal, msg.hold_input)
    elif isinstance(msg, WinSize) and sup.stdio is not None:
        sup.stdio.resize(msg.rows, msg.cols)


def read(ctl: Channel) -> Cancel | Signal | WinSize | None:
    """The launcher's next message; None at its end (or one the launcher should never
    send: the monitor then treats the launcher as gone, and ends the sandbox)."""
    try:
        msg = ctl.recv()
        if msg is None:
            return None
        got = protocol.parse(msg.type, msg.payload, Cancel, Signal, WinSize)
        assert isinstance(got, (Cancel, Signal, WinSize))
        return got
    except (OSError, ProtocolError):
        return None


def relay_signal(sup: Run, sig: int, hold_input: bool = False) -> None:
    """A signal the caller got (sandbox exec's SIGTERM, SIGHUP, ...), for the program:
    to the init, which forwards it to PID 2."""
    if not 0 < sig < signal.NSIG or sig in (signal.SIGKILL, signal.SIGSTOP):
        return
    if sup.early_signals is not None:   # PID 1 not Ready: it would drop it
        if len(sup.early_signals) < EARLY_MAX:
            sup.early_signals.append(sig)
        return
    if sup.pid1_fd is None:
        return
    if sig in (signal.SIGTSTP, signal.SIGCONT) and sup.stdio is not None:
        sup.stdio.job_stopped(sig == signal.SIGTSTP or hold_input)
        if sig == signal.SIGCONT:
            sup.stop_said = False   # the init's next stop is the launcher's again
    tree.send(sup.pid1_fd, sig)   # by pidfd, never by number


def program_stopped(sup: Run, msg: ProgramStopped, sender: int) -> None:
    """The init says PID 2 stopped at its pty (^Z): the caller's job is to stop too,
    as at a terminal (the launcher restores the caller's terminal and stops itself,
    or its client). Believed of the init alone, and said once until the caller
    continues the job."""
    if sender != sup.pid1 or sup.stdio is None or sup.stdio.master is None \
            or sup.stop_said:
        return
    sup.stop_said = True
    sup.stdio.job_stopped(True)
    try:
        sup.ctl.sock.sendall(protocol.to_frame(msg, protocol.EXIT_REPORT_MAX))
    except OSError:
        pass   # the launcher is gone
