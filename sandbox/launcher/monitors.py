"""Starting a run's monitor: forked by the warm fork server (default), or exec'd.

Both give a handle with the same small interface the session needs
(`stdout`, `stderr`, `poll`, `kill`, `wait`). A forked monitor is not the
launcher's child, so it is watched through a pidfd that the fork server
opened right after the fork (race-free: the pid cannot be reused before the
fork server, its parent, lets the kernel reap it).

The launcher is multi-threaded (parallel spawns); it never forks itself.
`subprocess` exec's at once after its fork, and the fork server is a
separate, single-threaded process, so no fork happens in a process with
threads.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, Any

from sandbox.launcher import prepare as P


class ForkedMonitor:
    def __init__(self, pid: int, pidfd: int, stdout: IO[bytes] | None,
                 stderr: IO[bytes] | None, *, reap: bool = False) -> None:
        self.pid, self.pidfd, self.reap = pid, pidfd, reap
        self.stdout, self.stderr = stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self.pidfd >= 0:
            ready, _, _ = select.select([self.pidfd], [], [], 0)
            if ready:
                self.returncode = 0  # exit details come from the monitor's own report
        return self.returncode

    def kill(self) -> None:
        if self.pidfd >= 0 and self.returncode is None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def send_signal(self, sig: int) -> None:
        if self.pidfd >= 0:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> int:
        if self.pidfd >= 0 and not self.reap:
            # The fork server reaps it; the monitor reported already, and may
            # still be removing its cgroup: no need to wait for that.
            os.close(self.pidfd)
            self.pidfd = -1
            self.returncode = 0
        if self.pidfd >= 0:
            ready, _, _ = select.select([self.pidfd], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired("monitor", timeout or 0)
            os.close(self.pidfd)
            self.pidfd = -1
            self.returncode = 0
            if self.reap:  # our own child (direct fork): reap it
                os.waitpid(self.pid, 0)
        return self.returncode or 0


class ForkServerClient:
    """One fork server per launcher (owned by it, no process-wide global), started
    on first use, restarted if it dies, stopped by `Launcher.close()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None

    def _start(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {"SANDBOX_FORKSERVER_FD": str(theirs.fileno()),
               "SANDBOX_LAUNCHER_PID": str(os.getpid()),
               # "0" turns off the spare sandbox (sandbox.monitor.spare)
               "SANDBOX_SPARE": os.environ.get("SANDBOX_SPARE", "1")}
        self._proc = subprocess.Popen([sys.executable, "-I", "-m", "sandbox.forkserver"],
                                      env=env, stdin=subprocess.DEVNULL,
                                      pass_fds=(theirs.fileno(),))
        theirs.close()
        self._sock = mine

    def _request(self, fds: list[int]) -> tuple[int, int]:
        assert self._sock is not None
        socket.send_fds(self._sock, [b'{"op": "spawn"}'], fds)
        data, got, _, _ = socket.recv_fds(self._sock, 4096, 1)
        if not data:
            raise ConnectionError("the fork server closed its socket")
        reply = json.loads(data)
        if "error" in reply or not got:
            for fd in got:
                os.close(fd)
            raise OSError(f"fork server: {reply.get('error', 'no pidfd')}")
        return reply["pid"], got[0]

    def spawn(self, fds: list[int]) -> tuple[int, int]:
        """Fork a monitor with these descriptors; retries once on a fresh server."""
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


START_MODES = ("forkserver", "fork", "exec")


def _stdio(capture: bool) -> tuple[list[int], int | None, int | None, list[int]]:
    """(fds stdin/stdout/stderr for the monitor, read ends, fds to close after)."""
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    if not capture:
        return [devnull, 1, 2], None, None, [devnull]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    return [devnull, out_w, err_w], out_r, err_r, [devnull, out_w, err_w]


def _fork_direct(ipc_fd: int, ctl_fd: int, stdio: list[int]) -> tuple[int, int]:
    """Fork the monitor from this (single-threaded) process: no second interpreter."""
    if threading.active_count() > 1:
        raise RuntimeError("start='fork' needs a single-threaded launcher process; "
                           "use the fork server (the default) from threaded code")
    from sandbox.isolation.libc import adopt_stdio
    from sandbox.monitor import main as monitor_main
    launcher_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            adopt_stdio(*stdio)
            from sandbox.isolation.privileges import close_fds
            close_fds({ipc_fd, ctl_fd})
            os.set_inheritable(ipc_fd, True)
            code = monitor_main.run_monitor(ctl_fd, ipc_fd=ipc_fd, launcher_pid=launcher_pid)
        finally:
            os._exit(code)
    return pid, os.pidfd_open(pid)


def start_monitor(mode: str, ipc_child: socket.socket, ctl_child: socket.socket,
                  capture: bool, *, server: ForkServerClient | None = None) -> Any:
    """Start the run's monitor: forked by `server` (the launcher's fork server),
    forked directly, or exec'd."""
    if mode == "exec":
        env = {"SANDBOX_MONITOR_FD": str(ctl_child.fileno()),
               "SANDBOX_LAUNCHER_PID": str(os.getpid())}
        pipe = subprocess.PIPE if capture else None
        return subprocess.Popen(P.monitor_command(), env=env, stdin=subprocess.DEVNULL,
                                stdout=pipe, stderr=pipe,
                                pass_fds=(ipc_child.fileno(), ctl_child.fileno()))
    stdio, out_r, err_r, to_close = _stdio(capture)
    try:
        if mode == "fork":
            pid, pidfd = _fork_direct(ipc_child.fileno(), ctl_child.fileno(), stdio)
        else:
            if server is None:
                raise ValueError("start='forkserver' needs the launcher's fork server")
            pid, pidfd = server.spawn(
                [ipc_child.fileno(), ctl_child.fileno(), *stdio])
    except BaseException:
        for fd in (out_r, err_r):
            if fd is not None:
                os.close(fd)
        raise
    finally:
        for fd in to_close:
            os.close(fd)
    stdout = os.fdopen(out_r, "rb", buffering=0) if out_r is not None else None
    stderr = os.fdopen(err_r, "rb", buffering=0) if err_r is not None else None
    return ForkedMonitor(pid, pidfd, stdout, stderr, reap=(mode == "fork"))
