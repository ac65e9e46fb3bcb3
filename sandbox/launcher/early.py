"""A cold `sandbox exec`'s monitor, started before the CLI's own heavy imports.

Why: the cold path runs two interpreters one after the other, the CLI (its
imports: the launcher, the policy engine, the protocol) and then the exec'd
monitor (its start-up and imports: the same packages again, plus the sandboxee
side). Neither needs the other until the launcher sends the run's spec, so the
CLI starts the monitor as soon as it knows the run's stdin (right after parsing
its arguments, `sandbox/cli/exec_cmd.py`), and both import at once on two
cores; the monitor then waits for the spec on its control socket as always.

This module imports only what starting the monitor needs (no dataclasses, no
protocol). The launcher adopts the monitor for its first run when that run's
stdio is what the monitor was given (`Launcher(early=...)`, `fits`); one never
adopted is dropped by `discard`: its sockets close, it sees end of stream
before any spec and exits EXIT_NO_SPEC (sandbox.monitor.main), as a monitor
whose launcher gave up always did.
"""
from __future__ import annotations

import os
import socket
import subprocess

from sandbox.launcher.interp import exec_monitor


class EarlyMonitor:
    """An exec'd monitor waiting for a run: its IPC and control socket pairs (the
    launcher's ends and the child ends it sent), its process, which of its stdin,
    stdout, stderr it relays. `stdin` is 0 (relay the caller's) or None (an empty,
    closed stdin); stdout and stderr are always the caller's 1 and 2."""

    def __init__(self, stdin: int | None) -> None:
        self.stdin = stdin
        self.ipc_parent, self.ipc_child = socket.socketpair()
        self.ctl_parent, self.ctl_child = socket.socketpair()
        self.taken = False
        empty = None
        try:
            if stdin is None:
                empty, w = os.pipe2(os.O_CLOEXEC)
                os.close(w)   # no input: end of stream at once
                stdin = empty
            self.proc: subprocess.Popen[bytes] = exec_monitor(
                [stdin, 1, 2], self.ipc_child, self.ctl_child)
        except BaseException:
            self._close_sockets()
            raise
        finally:
            if empty is not None:
                os.close(empty)
        self.relay = [empty is None, True, True]

    def fits(self, capture: bool, stdin: object) -> bool:
        """Whether a run with this capture and stdin can take this monitor."""
        if self.taken or capture or self.proc.poll() is not None:
            return False
        if stdin is None or self.stdin is None:
            return stdin is None and self.stdin is None
        return isinstance(stdin, int) and not isinstance(stdin, bool) and stdin == self.stdin

    def take(self) -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
        """The run's sockets (ipc parent, ipc child, control parent, control child): the
        run owns them, and the process, from here on."""
        self.taken = True
        return self.ipc_parent, self.ipc_child, self.ctl_parent, self.ctl_child

    def discard(self) -> None:
        """Drop a monitor no run took: it exits at the end of its control stream (not
        waited for: the CLI is about to exit, and the monitor may still be importing)."""
        if not self.taken:
            self.taken = True
            self._close_sockets()

    def _close_sockets(self) -> None:
        for s in (self.ipc_parent, self.ipc_child, self.ctl_parent, self.ctl_child):
            s.close()
