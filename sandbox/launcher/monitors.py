"""Starting a run's monitor: the fork server's monitor host (default), or exec'd.

Both give a handle with the same small interface the session needs
(`stdout`, `stderr`, `poll`, `kill`, `wait`). A forked monitor is not the
launcher's child, so it is watched through a pidfd that the fork server
opened right after the fork (race-free: the pid cannot be reused before the
fork server, its parent, lets the kernel reap it).

The launcher never forks a monitor itself (there is no start="fork"): a
sandboxee must never be a fork of a process that held the caller's
environment or heap, because everything before the program's exec (and all of
a Python workflow's PID 1, which does not exec) would keep the caller's
environment block (/proc/self/environ) and every page of its memory (issue 10
finding 4). The fork server and an exec'd monitor are fresh interpreters
started with an explicit, minimal environment (`monitor_env`); only what the
run's policy lets through reaches the program, in the spec. The launcher is
also multi-threaded (parallel spawns); `subprocess` exec's at once after its
fork.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import IO, Union

from sandbox import fdwait, protocol
from sandbox.launcher import prepare as P
from sandbox.launcher.interp import exec_monitor, helper_command, monitor_env


class ForkedMonitor:
    """A run supervised by the fork server's monitor host (one process for every run of
    the launcher, `pid`): its end comes on this run's exit socket (`MonitorExited`,
    or end of stream if the host died); closing that socket abandons the run (the
    host kills its sandbox), which is what `kill` does: never a signal to the host,
    which serves other runs."""

    def __init__(self, pid: int, exit_sock: socket.socket,
                 stdout: IO[bytes] | None, stderr: IO[bytes] | None) -> None:
        self.pid, self.exit_sock = pid, exit_sock
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The monitor's exit code as subprocess gives it (negative: killed by that
        signal), or None while it runs."""
        if self.returncode is None and self.exit_sock.fileno() >= 0 \
                and fdwait.readable([self.exit_sock], 0):
            self._take_status()
        return self.returncode

    def _take_status(self) -> None:
        try:
            msg, _ = protocol.recv(self.exit_sock, protocol.MonitorExited, max_fds=0)
        except (OSError, protocol.ProtocolError):
            msg = None
        # No status at all: the fork server itself is gone (and the monitor with it).
        status = msg.status if msg is not None else signal.SIGKILL
        try:
            self.returncode = os.waitstatus_to_exitcode(status)
        except ValueError:
            self.returncode = -signal.SIGKILL
        self.exit_sock.close()

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        """SIGKILL abandons the run (its sandbox dies); other signals go to the program
        on the control channel, not here."""
        if sig == signal.SIGKILL and self.returncode is None and self.exit_sock.fileno() >= 0:
            try:
                self.exit_sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds for the real status; None if it did not come."""
        if self.returncode is None and self.exit_sock.fileno() >= 0 \
                and fdwait.readable([self.exit_sock], timeout):
            self._take_status()
        return self.returncode

    def close(self) -> None:
        self.exit_sock.close()


Monitor = Union[ForkedMonitor, "subprocess.Popen[bytes]"]


def end_monitor(proc: Monitor, need_status: bool) -> None:
    """After the run: release the monitor handle. Its real exit status is waited for
    (a few seconds at most) only when the run needs it, i.e. the monitor sent no
    report; otherwise it may still be removing the run's cgroup, which the caller
    need not wait for. An exec'd monitor is always waited for (it is our child)."""
    try:
        if isinstance(proc, ForkedMonitor):
            if need_status:
                proc.wait(timeout=5.0)
            proc.close()
        else:
            proc.wait()
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


class ForkServerClient:
    """One fork server per launcher (owned by it, no process-wide global), started
    on first use, restarted if it dies, stopped by `Launcher.close()`.

    `command` replaces the server's own (``python -I -S`` running sandbox.forkserver,
    launcher/interp.py; tests start a server with a patched layer this way); it gets
    `monitor_env` all the same."""

    def __init__(self, command: list[str] | None = None) -> None:
        self.command = list(command or helper_command("sandbox.forkserver"))
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None

    def _start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # SANDBOX_SPARE=0 turns off the spare sandbox (sandbox.monitor.spare)
        env = monitor_env(SANDBOX_FORKSERVER_FD=str(theirs.fileno()),
                          SANDBOX_SPARE="0" if os.environ.get("SANDBOX_SPARE") == "0" else "1")
        self._proc = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                      pass_fds=(theirs.fileno(),))
        theirs.close()
        self._sock = mine

    def _request(self, fds: list[int]) -> int:
        """Hand a run to the server: `fds` are the run's five and its exit socket."""
        assert self._sock is not None
        protocol.send(self._sock, protocol.SpawnRequest(), fds)
        try:
            reply, got = protocol.recv(self._sock, protocol.Spawned, protocol.Refused, max_fds=0)
        except protocol.ProtocolError as exc:
            raise OSError(f"fork server: {exc}") from None
        if reply is None:
            raise ConnectionError("the fork server closed its socket")
        if not isinstance(reply, protocol.Spawned):
            raise OSError(f"fork server: {getattr(reply, 'error', 'refused')}")
        return reply.pid

    def spawn(self, fds: list[int]) -> int:
        """Hand a run to the server (its pid); retries once on a fresh server."""
        with self._lock:
            for attempt in (1, 2):
                if self._proc is None or self._proc.poll() is not None:
                    self.close_locked()
                    self._start()
                try:
                    return self._request(fds)
                except (ConnectionError, BrokenPipeError, ConnectionResetError):
                    self.close_locked()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def close_locked(self) -> None:
        """Close our end: the server sees end-of-stream, lets its spare free its
        cgroups and exits; it is killed only if it has not within a few seconds."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


START_MODES = ("forkserver", "exec")


class ServerGone(ConnectionError):
    """A fork server this process may not restart (the `sandbox exec` daemon's, shared by
    its runs) was gone before it answered: nothing of the run began, so the run starts
    its own monitor the cold way instead (`start_monitor`)."""


@dataclass
class Stdio:
    """The run's stdin, stdout and stderr as handed to the monitor.

    `relay[i]` is False for a pipe made here for this run (captured output,
    stdin from bytes or closed), which the sandbox may hold as is; True for a
    descriptor of the caller's own, which the monitor keeps and relays through
    a pipe (or pty) of its own (sandbox.monitor.stdio).
    """
    fds: list[int]                      # for the monitor: stdin, stdout, stderr
    relay: list[bool]
    out_r: int | None = None            # read ends of captured output
    err_r: int | None = None
    to_close: list[int] = field(default_factory=list)   # ours, after the monitor has them

    def close_readers(self) -> None:
        for fd in (self.out_r, self.err_r):
            if fd is not None:
                os.close(fd)


StdinSource = Union[None, bytes, int]


def _feed(fd: int, data: bytes) -> None:
    """Write `data` to the sandbox's stdin pipe, then close it (end of input)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        pass   # the program closed its stdin early
    finally:
        os.close(fd)


def _stdio(capture: bool, stdin: StdinSource) -> Stdio:
    st = Stdio(fds=[], relay=[])
    if isinstance(stdin, int) and not isinstance(stdin, bool):
        st.fds.append(stdin)
        st.relay.append(True)
    else:
        r, w = os.pipe2(os.O_CLOEXEC)
        st.fds.append(r)
        st.relay.append(False)
        st.to_close.append(r)
        if stdin:
            threading.Thread(target=_feed, args=(w, bytes(stdin)), daemon=True,
                             name="stdin-feed").start()
        else:
            os.close(w)   # no input: end of stream at once
    if capture:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        st.fds += [out_w, err_w]
        st.relay += [False, False]
        st.out_r, st.err_r = out_r, err_r
        st.to_close += [out_w, err_w]
    else:
        st.fds += [1, 2]
        st.relay += [True, True]
    return st


def _exec_monitor(st: Stdio, ipc_child: socket.socket,
                  ctl_child: socket.socket) -> "subprocess.Popen[bytes]":
    """sandbox.monitor.main (`python -I -S`: interp.py) for this one run, our child."""
    proc = exec_monitor(st.fds, ipc_child, ctl_child)
    proc.stdout = os.fdopen(st.out_r, "rb", buffering=0) if st.out_r is not None else None
    proc.stderr = os.fdopen(st.err_r, "rb", buffering=0) if st.err_r is not None else None
    return proc


def start_monitor(mode: str, ipc_child: socket.socket, ctl_child: socket.socket,
                  capture: bool, stdin: StdinSource = None, *,
                  server: ForkServerClient | None = None) -> tuple[Monitor, list[bool]]:
    """Start the run's monitor: forked by `server` (the launcher's fork server),
    or exec'd. Returns the handle and which of stdin, stdout, stderr the monitor
    must relay (sandbox.monitor.stdio)."""
    st = _stdio(capture, stdin)
    try:
        if mode == "exec":
            return _exec_monitor(st, ipc_child, ctl_child), st.relay
        if server is None:
            raise ValueError("start='forkserver' needs the launcher's fork server")
        exit_mine, exit_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = server.spawn([ipc_child.fileno(), ctl_child.fileno(), *st.fds,
                                exit_theirs.fileno()])
        except ServerGone:
            exit_mine.close()
            return _exec_monitor(st, ipc_child, ctl_child), st.relay
        except BaseException:
            exit_mine.close()
            raise
        finally:
            exit_theirs.close()
    except BaseException:
        st.close_readers()
        raise
    finally:
        for fd in st.to_close:
            os.close(fd)
    stdout = os.fdopen(st.out_r, "rb", buffering=0) if st.out_r is not None else None
    stderr = os.fdopen(st.err_r, "rb", buffering=0) if st.err_r is not None else None
    return ForkedMonitor(pid, exit_mine, stdout, stderr), st.relay
