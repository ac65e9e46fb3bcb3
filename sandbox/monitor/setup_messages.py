"""What a run's PID 1 and PID 2 say to the monitor, applied to the run's Supervisor.

Two sources, both within the sandbox's reach:

- **The setup socket** (`read_one`): PID 1 is trusted until the program starts,
  but a message may arrive later from nobody but the program's parent (its
  `ExecError`), so each is read as one of `SETUP_MESSAGES` and nothing else; a
  descriptor comes only with the message that names it, is taken once, and any
  other is closed. Anything not of the protocol's shape ends this source.
- **The exit pipe** (`program_status`): the init writes the program's raw wait
  status on it, and anyone in the sandbox could have written first, so its bytes
  are believed only when they agree with the init's own exit code.

Split from supervisor.py (which calls `read_one` from the host's loop, and
`program_status` when the stub reports PID 1's end): the Supervisor holds a run's
state and its lifecycle, this module what the sandbox's side says of it.
"""
from __future__ import annotations

import os
import socket
import sys
from typing import Any, Protocol

from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.isolation.context import ContainContext
from sandbox.monitor import caller_control, stubs
from sandbox.protocol import (CowFd, ExecError, ExitReport, ListenerAt, OutputFd,
                              ProgramExited, ProgramStopped, ProxyFds, Ready, ScratchFd,
                              SetupFailure, ShmFd)

SETUP_MESSAGES = (ListenerAt, Ready, SetupFailure, ExecError, ScratchFd, ShmFd, OutputFd,
                  ProxyFds, CowFd, ProgramStopped)


class Run(caller_control.Run, Protocol):
    """What this module reads and sets of a run (sandbox.monitor.supervisor.Supervisor)."""
    ctx: ContainContext
    skipped: dict[str, str]
    timings: dict[str, float]
    scratch_fd: int | None
    shm_fd: int | None
    output_fd: int | None
    cow_fd: int | None
    proxy: Any               # netproxy.monitor_side's handle, once started

    def mark(self, phase: str) -> None: ...

    def start_listener(self, fd: int) -> None: ...


def read_one(sup: Run, sock: socket.socket) -> bool:
    """One message of PID 1's (or PID 2's exec_error), applied; False at the socket's
    end or on anything not of the protocol's shape."""
    try:
        msg, fds, sender = stubs.recv_setup(sock, SETUP_MESSAGES)   # SO_PASSCRED
    except (OSError, ProtocolError):
        return False
    if msg is None:
        return False
    if isinstance(msg, ListenerAt) and not fds:
        # PID 1 cannot sendmsg its listener once the filter mediates sendmsg (it
        # would wait on itself): the monitor takes it (pidfd_getfd) from the
        # sender the kernel names, and says so
        fds = take_listener(sender or sup.pid1 or 0, msg.fd)
        try:
            protocol.send(sock, protocol.Ack(bool(fds)))
        except OSError:
            pass
    report = sup.report
    if isinstance(msg, Ready):
        report.layers = list(msg.active)
        report.skipped = {**sup.skipped, **msg.skipped}
        sup.mark("sandboxee_ready")
        early, sup.early_signals = sup.early_signals or [], None
        for sig in early:
            caller_control.relay_signal(sup, sig)
        for layer, secs in msg.timings.items():
            sup.timings[sys.intern(f"layer.{layer}")] = secs   # every run's keys
    elif isinstance(msg, SetupFailure):
        report.setup_error = msg
    elif isinstance(msg, ProgramStopped):
        caller_control.program_stopped(sup, msg, sender)
    elif isinstance(msg, ExecError):
        # worded here when PID 2 (the compiled init's fork) sent only the errno
        report.exec_error = msg.message or protocol.exec_message(msg.failure)
        report.exec_failure = msg.failure
    elif isinstance(msg, ScratchFd) and fds and sup.scratch_fd is None:
        sup.mark("scratch_received")   # before the filter (entry.hand_over)
        sup.scratch_fd = fds.pop(0)
    elif isinstance(msg, ShmFd) and fds and sup.shm_fd is None:
        sup.shm_fd = fds.pop(0)
    elif isinstance(msg, ListenerAt) and fds:
        sup.mark("listener_received")
        sup.start_listener(fds.pop(0))
        sup.mark("listener_started")
    elif isinstance(msg, ProxyFds) and fds and sup.proxy is None \
            and sup.ctx.policy.network.mode == "allowlist":
        from sandbox.netproxy import monitor_side   # issue 18: the allowlist proxy
        sup.proxy = monitor_side.start(sup, fds)   # the proxy's, the DNS stub's
        fds = []
    elif isinstance(msg, OutputFd) and fds and sup.output_fd is None:
        sup.output_fd = fds.pop(0)
    elif isinstance(msg, CowFd) and fds and sup.cow_fd is None:
        sup.cow_fd = fds.pop(0)
    for extra in fds:
        os.close(extra)
    return True


def take_listener(pid: int, fd: int) -> list[int]:
    """PID 1's seccomp listener, `fd` in process `pid`, as a descriptor of ours (or
    none: the run then fails closed at PID 1, which waits for the Ack)."""
    from sandbox.monitor.broker import take_fd
    if pid <= 0:
        return []
    try:
        return [take_fd(pid, fd)]
    except OSError:
        return []


def program_status(exit_fd: int | None, init_status: int, report: ExitReport) -> int:
    """The program's own wait status, as the init wrote it on the exit pipe `exit_fd`,
    when it agrees with the init's exit code (the code, or 128+N); else the init's
    status (e.g. killed by us). `report.init_status` says when the two differ."""
    limit = protocol.envelope_max(ProgramExited)
    try:
        data = os.read(exit_fd, limit + 1) if exit_fd is not None else b""
        raw: int | None = protocol.from_envelope(data, ProgramExited, limit=limit).status
    except (OSError, ProtocolError):
        raw = None
    if raw is None or not 0 <= raw <= 0xFFFF or not os.WIFEXITED(init_status):
        return init_status
    expect = os.WEXITSTATUS(raw) if os.WIFEXITED(raw) else \
        128 + os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else 255
    if (expect & 0xFF) != os.WEXITSTATUS(init_status):
        return init_status
    report.init_status = init_status
    return raw
