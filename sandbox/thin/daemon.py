"""The per-user daemon behind the thin `sandbox exec` (`sandbox daemon start|stop|status`).

WHY: a cold `sandbox exec` spends most of its time starting Python and
importing the CLI, the launcher and the policy engine, then paying first-run
costs (policy parse, cgroup probe). The daemon does all that once; each run is
a fork of it that takes the client's descriptors, working directory and
environment in place of its own and runs the unchanged `sandbox exec` code
(sandbox/thin/fork.py: one is forked ahead, after each answer, for the next).

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
from typing import TYPE_CHECKING, Any

from sandbox.thin import fork, wire
from sandbox.thin.control import socket_cred

if TYPE_CHECKING:
    from sandbox.policy.model import Policy
    from sandbox.thin.fork import Spare


@dataclass
class Run:
    conn: socket.socket
    pid: int
    pidfd: int
    done: int                    # the fork's frame (sandbox.thin.relay), -1 once read
    answered: bool = False       # the client has its code


@dataclass
class Daemon:
    path: str
    started: float = field(default_factory=time.time)
    runs: dict[int, Run] = field(default_factory=dict)     # pidfd -> run
    served: int = 0
    stopping: bool = False
    parser: Any = None           # exec's argparse parser, built once by warm()
    spare: Spare | None = None   # a fork ready for the next request (sandbox.thin.fork)
    from_spare: int = 0          # runs served by a spare
    restart: bool = False        # its install changed: exec a fresh daemon once idle
    stamp: tuple[tuple[str, int, int], ...] = ()   # the install's directories (package_stamp)
    checked: float = 0.0

    def __post_init__(self) -> None:
        from sandbox.thin.relay import Writers
        from sandbox.thin.shared import Owner
        self.forkserver = Owner()      # started by warm(), shared by every run
        self.histories = Writers()     # the runs' history rows, written here (relay.py)
        self.sel = selectors.DefaultSelector()
        self.listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)

    def let_go(self) -> None:
        """In a fork of the daemon (fork.detach): close what is the daemon's, its
        listening socket, its selector, every run's and the spare's descriptors."""
        self.sel.close()
        self.listen.close()
        for run in self.runs.values():
            os.close(run.pidfd)
            if run.done >= 0:
                os.close(run.done)
            run.conn.close()
        if self.spare is not None:
            self.spare.sock.close()
            os.close(self.spare.done)
            self.spare = None

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
        from sandbox.launcher import launcher, tidy  # noqa: F401  (launcher: imported once, here)
        from sandbox.policy.loader import load_policy_cached
        self.parser = main.build_parser("exec")   # the client sends exec requests only
        tidy.clean_stale_cgroups()          # once here, not in every run's fork
        tidy.sweep_once()                   # ditto: killed launchers' run directories
        for name in ("default", "strict"):
            try:
                # into the cache every run's fork inherits (kept while the files are
                # unchanged: mtime and content hash, sandbox.policy.sources)
                warm_plan(load_policy_cached(name))
            except Exception:
                pass
        self.forkserver.ensure()

    # -- the loop -------------------------------------------------------------------------
    def serve(self) -> None:
        while not (self.stopping and not self.runs):
            events = self.sel.select(timeout=1.0)
            if not self.stopping:
                self.forkserver.ensure()     # a dead one is restarted for the next run
                self._check_install()
            for key, _ in events:
                what = key.data
                if what == "accept":
                    self._accept()
                elif isinstance(what, Run) and key.fileobj is what.conn:
                    self._from_client(what)
                elif isinstance(what, Run) and key.fileobj == what.done:
                    self._finished(what)
                elif isinstance(what, Run) and key.fileobj == what.pidfd:
                    self._ended(what)
        self._close_listen()
        if self.spare is not None:
            self.spare.drop()
            self.spare = None
        self.forkserver.close()
        self.histories.close()

    def _check_install(self) -> None:
        """Once a second: has this install's code changed under us (`pip install -U`, a
        checkout moved to another commit)? A daemon kept serving the code it imported
        at its start, fixes included, until someone restarted it. Then it stops
        listening (a client runs cold meanwhile), lets its runs finish, and `main`
        execs a fresh daemon. A stat of each package directory: ~30 us."""
        now = time.monotonic()
        if now - self.checked < 1.0:
            return
        self.checked = now
        dirs = [d for d, _, _ in self.stamp]
        if self.stamp and package_stamp(wire.package_dir(), dirs) != self.stamp:
            self.restart = self.stopping = True
            self._close_listen()

    def _close_listen(self) -> None:
        """Stop taking requests: the socket is unlinked at once, so clients start cold
        (and a new daemon may bind the name) while the runs in flight finish."""
        if self.listen.fileno() < 0:
            return
        try:
            self.sel.unregister(self.listen)
        except KeyError:
            pass     # `stop` unregistered it
        self.listen.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

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
        try:
            op, argv, env, fds, after = fork.receive(conn)
        except (OSError, ValueError):
            conn.close()
            return
        if op == "status":
            self._reply(conn, f"running pid {os.getpid()} since {int(self.started)} "
                              f"served {self.served} running {len(self.runs)} "
                              f"forkserver {self.forkserver.pid or 0} "
                              f"spare {self.spare.pid if self.spare else 0} "
                              f"from-spare {self.from_spare}\n")
        elif op == "stop":
            self.stopping = True     # the spare is dropped as the loop ends
            self.sel.unregister(self.listen)
            self._reply(conn, "stopping\n")
        elif op == "exec" and len(fds) == 4 and not self.stopping and _same_groups(conn):
            self._signals(self._start(conn, argv, env, fds, pid), after)
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

    def _start(self, conn: socket.socket, argv: list[str], env: dict[str, str],
               fds: list[int], caller: int) -> Run:
        self.forkserver.ensure()     # one that died since the last run is replaced first
        spare, self.spare = self.spare, None
        if spare is not None and spare.server != self.forkserver.pid:
            spare.drop()             # a client of the fork server that was replaced
            spare = None
        if spare is not None and spare.hand(argv, env, fds, caller):
            pid, done_r = spare.pid, spare.done
            self.from_spare += 1
        else:
            pid, done_r = fork.start(self, lambda: (argv, env, fds, caller), (conn,))
        for fd in fds:
            os.close(fd)
        conn.setblocking(False)
        run = Run(conn, pid, os.pidfd_open(pid), done_r)
        self.runs[run.pidfd] = run
        self.served += 1
        self.sel.register(conn, selectors.EVENT_READ, run)
        self.sel.register(run.pidfd, selectors.EVENT_READ, run)
        self.sel.register(run.done, selectors.EVENT_READ, run)
        return run

    def _refill(self) -> None:
        """A spare for the next request (sandbox.thin.fork), made once a client has its
        answer: between two runs, not during one."""
        if self.spare is None and not self.stopping:
            try:
                self.spare = fork.make(self)
            except OSError:
                pass     # no fork now (a process limit): the next request forks itself

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
        self._signals(run, data)

    @staticmethod
    def _signals(run: Run, data: bytes) -> None:
        """The client's "S<signum>"s, for the fork, which holds each until its run relays
        it (sandbox.launcher.signals.hold)."""
        for i in range(0, len(data) - 1, 2):
            if data[i:i + 1] == b"S" and (data[i + 1] in wire.SIGNALS
                                          or data[i + 1] in wire.JOB_CONTROL):
                _kill(run.pid, data[i + 1])

    def _finished(self, run: Run) -> None:
        """The fork's frame: its history rows are written, then the client has its
        code, while the fork is still exiting (sandbox.thin.relay)."""
        if run.done < 0:
            return
        from sandbox.thin import relay
        got = relay.read(run.done)
        self.sel.unregister(run.done)
        os.close(run.done)
        run.done = -1
        if got is not None:
            code, rows, die_by = got
            self.histories.record(rows)
            self._answer(run, code, die_by)

    def _ended(self, run: Run) -> None:
        _, status = os.waitpid(run.pid, 0)
        self._finished(run)     # a frame that came with the exit, if not read yet
        code = os.waitstatus_to_exitcode(status)
        self.sel.unregister(run.pidfd)
        os.close(run.pidfd)
        del self.runs[run.pidfd]
        self._answer(run, code if 0 <= code <= 255 else 125)

    def _answer(self, run: Run, code: int, die_by: int | None = None) -> None:
        """"X<code>", or "K<signum>" when the client is to end by that signal (the
        program died of ^C: sandbox.process_end.die_by)."""
        if run.answered:
            return
        run.answered = True
        try:
            self.sel.unregister(run.conn)
        except KeyError:
            pass
        try:
            run.conn.setblocking(True)
            run.conn.sendall(b"K" + bytes([die_by]) if die_by else b"X" + bytes([code]))
        except OSError:
            pass
        run.conn.close()
        self._refill()


def package_stamp(root: str, dirs: list[str] | None = None) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime, inode) of the package's directories but __pycache__ (`dirs`: the
    ones listed before; a directory added or removed changes its parent's mtime). An
    install replaces files (a rename or an unlink and create), which moves the
    directory's mtime; an editor's in-place write does not, and is not seen."""
    if dirs is None:
        dirs = []
        for d, subdirs, _ in os.walk(root):
            subdirs[:] = sorted(x for x in subdirs if x != "__pycache__")
            dirs.append(d)
    out = []
    for d in dirs:
        try:
            st = os.stat(d)
        except OSError:
            return ()
        out.append((d, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def _same_groups(conn: socket.socket) -> bool:
    """The client has our gid and groups (wire.same_identity): else its run, whose
    program would hold ours, is not ours to serve (its client runs cold)."""
    try:
        return wire.same_identity(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12),
            conn.getsockopt(socket.SOL_SOCKET, wire.SO_PEERGROUPS, wire.PEERGROUPS_BYTES))
    except OSError:
        return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


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
    "sandbox._native", "sandbox.cli.terminal", "sandbox.process_end", "sandbox.cli.inside",
)


def warm_plan(policy: Policy) -> None:
    """Plan `policy` once here, for a work directory and an output of the daemon's own
    (nothing is made): what the plan caches -- the homes of /etc/passwd's users
    (sandbox.policy.credentials, per passwd file), the compiled glob patterns (the re
    module's cache) -- is then in every fork. Measured in the forks' `prepare`, three
    alternated rounds of 25 runs against main (medians): 4.2-4.9 -> 3.2-3.3 ms."""
    from sandbox.policy import build_plan, default_variables, resolve
    home = os.path.expanduser("~")
    build_plan(resolve(policy, default_variables(home, os.path.join(home, ".sandbox-warm"))))


def main(argv: list[str]) -> int:
    daemon = Daemon(argv[0])
    daemon.stamp = package_stamp(wire.package_dir())   # the code it is about to import
    daemon.warm()
    # Every run is a fork of this process: objects the collector would visit in a run
    # (writing their headers: a page copy each) are moved out of its reach, as the fork
    # server's template does (monitor/zygote.py). Alternated, 40 runs each, the forks'
    # CPU per warm `sandbox exec -- /bin/true`: 22.5 / 26.3 ms against 25.0 / 28.0.
    gc.collect()
    gc.freeze()
    daemon.bind()
    daemon._refill()
    signal.signal(signal.SIGTERM, lambda *_: setattr(daemon, "stopping", True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        daemon.serve()
    except OSError as exc:
        if exc.errno != errno.EINTR:
            raise
    if daemon.restart:
        # the same command line, now importing the install's new code
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
