"""The per-user daemon behind the thin `sandbox exec` (`sandbox daemon start|stop|status`).

WHY: a cold `sandbox exec` spends most of its time starting Python and
importing the CLI, the launcher and the policy engine, then paying first-run
costs (policy parse, cgroup probe). The daemon does all that once; each run is
a fork of it that takes the client's descriptors, working directory and
environment in place of its own and runs the unchanged `sandbox exec` code.

Trust: one daemon per user and state directory. Its socket is 0600 in a 0700
directory of the user's (`wire.socket_dir`), and every connection's peer must
have the daemon's uid (SO_PEERCRED), so only the user's own processes can ask
it to run anything -- which they could do with `sandbox exec` anyway.

The daemon's own environment never reaches a run: the forked child clears
``os.environ`` (the C ``environ`` with it) and takes the client's, and the
run's monitor is exec'd with its own minimal environment as on the cold path
(tests/test_thin_exec.py extends the environ canary test to this path). The
daemon is single-threaded (a selector over the listening socket, the clients'
sockets and the children's pidfds), so forking it is safe.
"""
from __future__ import annotations

import errno
import gc
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from sandbox.thin import wire


@dataclass
class Run:
    conn: socket.socket
    pid: int
    pidfd: int


@dataclass
class Daemon:
    path: str
    started: float = field(default_factory=time.time)
    runs: dict[int, Run] = field(default_factory=dict)     # pidfd -> run
    served: int = 0
    stopping: bool = False
    parser: Any = None           # exec's argparse parser, built once by warm()

    def __post_init__(self) -> None:
        from sandbox.thin.shared import Owner
        self.forkserver = Owner()      # started by warm(), shared by every run
        self.sel = selectors.DefaultSelector()
        self.listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)

    # -- set-up ---------------------------------------------------------------------------
    def bind(self) -> None:
        d = os.path.dirname(self.path)
        if not wire.private_dir_ok(d):
            raise SystemExit(f"sandbox daemon: {d} is not a private (0700) directory of ours")
        if os.path.lexists(self.path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.path)
                raise SystemExit("sandbox daemon: already running")
            except OSError:
                os.unlink(self.path)     # a stale socket of an earlier daemon
            finally:
                probe.close()
        old = os.umask(0o177)
        try:
            self.listen.bind(self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.listen.listen(64)
        self.sel.register(self.listen, selectors.EVENT_READ, "accept")

    def warm(self) -> None:
        """Import and prime what every `sandbox exec` needs, once, and start the fork
        server every run takes its monitor from (sandbox.thin.shared)."""
        preload()
        from sandbox.cli import main
        from sandbox.launcher import launcher
        from sandbox.policy.loader import load_policy_cached
        self.parser = main.build_parser("exec")   # the client sends exec requests only
        launcher._clean_stale_cgroups()     # once here, not in every run's fork
        for name in ("default", "strict"):
            try:
                # into the cache every run's fork inherits (kept while the files are
                # unchanged: mtime and content hash, sandbox.policy.sources)
                load_policy_cached(name)
            except Exception:
                pass
        self.forkserver.ensure()

    # -- the loop -------------------------------------------------------------------------
    def serve(self) -> None:
        while not (self.stopping and not self.runs):
            events = self.sel.select(timeout=1.0)
            if not self.stopping:
                self.forkserver.ensure()     # a dead one is restarted for the next run
            for key, _ in events:
                what = key.data
                if what == "accept":
                    self._accept()
                elif isinstance(what, Run) and key.fileobj is what.conn:
                    self._from_client(what)
                elif isinstance(what, Run):
                    self._ended(what)
        self.listen.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.forkserver.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listen.accept()
        except OSError:
            return
        pid, uid, _ = socket_cred(conn)
        if uid != os.getuid():
            conn.close()
            return
        conn.settimeout(5.0)
        fds: list[int] = []
        try:
            op, argv, env, fds = self._request(conn)
        except (OSError, ValueError):
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        if op == "status":
            self._reply(conn, f"running pid {os.getpid()} since {int(self.started)} "
                              f"served {self.served} running {len(self.runs)} "
                              f"forkserver {self.forkserver.pid or 0}\n")
        elif op == "stop":
            self.stopping = True
            self.sel.unregister(self.listen)
            self._reply(conn, "stopping\n")
        elif op == "exec" and len(fds) == 4 and not self.stopping:
            self._start(conn, argv, env, fds)
        else:
            for fd in fds:
                os.close(fd)
            conn.close()

    @staticmethod
    def _reply(conn: socket.socket, text: str) -> None:
        try:
            conn.sendall(text.encode())
        except OSError:
            pass
        conn.close()

    @staticmethod
    def _request(conn: socket.socket) -> tuple[str, list[str], dict[str, str], list[int]]:
        data, fds, _, _ = socket.recv_fds(conn, 65536, 8)
        fds = list(fds)
        if len(data) < 4:
            raise ValueError("short request")
        size = int.from_bytes(data[:4], "little")
        if size > wire.MAX_REQUEST:
            raise ValueError("request too large")
        body = bytearray(data[4:])
        while len(body) < size:
            chunk = conn.recv(min(65536, size - len(body)))
            if not chunk:
                raise ValueError("truncated request")
            body += chunk
        op, argv, env = wire.decode(bytes(body))
        return op, argv, env, fds

    def _start(self, conn: socket.socket, argv: list[str], env: dict[str, str],
               fds: list[int]) -> None:
        self.forkserver.ensure()     # one that died since the last run is replaced first
        pid = os.fork()
        if pid == 0:
            code = 125
            try:
                code = child(self, conn, argv, env, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        conn.setblocking(False)
        run = Run(conn, pid, os.pidfd_open(pid))
        self.runs[run.pidfd] = run
        self.served += 1
        self.sel.register(conn, selectors.EVENT_READ, run)
        self.sel.register(run.pidfd, selectors.EVENT_READ, run)

    def _from_client(self, run: Run) -> None:
        try:
            data = run.conn.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:   # the client is gone: as a terminal hanging up
            self.sel.unregister(run.conn)
            _kill(run.pid, signal.SIGHUP)
            return
        for i in range(0, len(data) - 1, 2):
            if data[i:i + 1] == b"S" and data[i + 1] in wire.SIGNALS:
                _kill(run.pid, data[i + 1])

    def _ended(self, run: Run) -> None:
        _, status = os.waitpid(run.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        code = code if 0 <= code <= 255 else 125
        self.sel.unregister(run.pidfd)
        os.close(run.pidfd)
        del self.runs[run.pidfd]
        try:
            self.sel.unregister(run.conn)
        except KeyError:
            pass
        try:
            run.conn.setblocking(True)
            run.conn.sendall(b"X" + bytes([code]))
        except OSError:
            pass
        run.conn.close()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def socket_cred(conn: socket.socket) -> tuple[int, int, int]:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"))


PRELOAD = (
    "sandbox.cli.exec_cmd", "sandbox.cli.grants", "sandbox.cli.main",
    "sandbox.launcher.launcher", "sandbox.launcher.signals", "sandbox.policy.loader",
)


def preload() -> None:
    """Import what every run imports, once, in the daemon. A run is a fork of the daemon,
    so a module it imports after the fork is imported again in every run (19 ms of a
    160 ms warm run, cProfile at load 7). PRELOAD names the entry points, LAZY what a
    run imports inside functions; tests/test_daemon_preload.py runs a whole `sandbox
    exec` after the warm-up and fails on any module it still imports."""
    import importlib
    for name in PRELOAD + LAZY:
        importlib.import_module(name)
    from sandbox.policy import variables
    variables.python_paths()    # a constant of this interpreter, cached (it loads sysconfig)


# imported inside functions on a run's path (kept lazy for the cold CLI, which may
# never reach them)
LAZY = (
    "sandbox.monitor.stdio", "sandbox.isolation.identity", "sandbox.audit",
    "sandbox.audit.store", "sandbox.monitor.stdio_hub", "sandbox.monitor.per_process",
    "sandbox._native",
)


def child(daemon: Daemon, conn: socket.socket, argv: list[str], env: dict[str, str],
          fds: list[int]) -> int:
    """In the fork: become the client's `sandbox exec` process, then run it."""
    daemon.sel.close()
    daemon.listen.close()
    for run in daemon.runs.values():
        os.close(run.pidfd)
        run.conn.close()
    conn.close()
    for sig in wire.SIGNALS + (signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    for i, fd in enumerate(fds[:3]):
        os.dup2(fd, i)          # inheritable, like the caller's own 0, 1, 2
    os.fchdir(fds[3])
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.environ.clear()           # unsetenv each: the C environ too
    os.environ.update(env)
    from sandbox.cli import common
    common.CLI_FORKSERVER = daemon.forkserver.for_run(
        os.path.join(os.path.dirname(daemon.path), "forkserver.lock"))
    from sandbox.cli.main import main
    try:
        code = main(argv, daemon.parser)
    except SystemExit as exc:    # --help, --version
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    return code


def start(env: "os._Environ[str] | dict[str, str]", timeout: float = 20.0) -> str:
    """`sandbox daemon start`: a detached daemon with an empty environment but for what
    locates the state directory; returns its status line once it answers."""
    import subprocess
    from sandbox.launcher.output_path import private_dir
    # the state directory of `env` (the caller's), made private level by level
    state = private_dir(wire.state_dir(env), what="state directory ($SANDBOX_HOME)",
                        empty=False, system_check=False)
    d = private_dir(os.path.join(state, "daemon"), what="state directory", empty=False,
                    system_check=False)
    path = os.path.join(d, "sock")
    line = status(path)
    if line:
        return "already " + line
    keep = {k: env[k] for k in ("SANDBOX_HOME", "XDG_STATE_HOME", "HOME") if k in env}
    subprocess.Popen([sys.executable, "-I", "-m", "sandbox.thin.daemon", path], env=keep,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = status(path)
        if line:
            return line
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not answer on {path} within {timeout:.0f}s")


def ask(path: str, op: str) -> str | None:
    if not wire.private_dir_ok(os.path.dirname(path)):
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    try:
        s.connect(path)
        if socket_cred(s)[1] != os.getuid():
            return None
        s.sendall(wire.encode(op, [], {}))
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out.decode().strip() or None
    except OSError:
        return None
    finally:
        s.close()


def status(path: str) -> str | None:
    return ask(path, "status")


def stop(path: str, timeout: float = 30.0) -> bool:
    """Ask the daemon to stop (runs in flight finish first); True once its socket is gone."""
    if ask(path, "stop") is None:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.path.lexists(path):
        time.sleep(0.05)
    return not os.path.lexists(path)


def main(argv: list[str]) -> int:
    daemon = Daemon(argv[0])
    daemon.warm()
    # Every run is a fork of this process: objects the collector would visit in a run
    # (writing their headers: a page copy each) are moved out of its reach, as the fork
    # server's template does (monitor/zygote.py). Alternated, 40 runs each, the forks'
    # CPU per warm `sandbox exec -- /bin/true`: 22.5 / 26.3 ms against 25.0 / 28.0.
    gc.collect()
    gc.freeze()
    daemon.bind()
    signal.signal(signal.SIGTERM, lambda *_: setattr(daemon, "stopping", True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        daemon.serve()
    except OSError as exc:
        if exc.errno != errno.EINTR:
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
