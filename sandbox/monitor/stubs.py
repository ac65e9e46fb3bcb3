"""A run's stub, forked ahead of its spec: the one way a sandbox starts.

Every stub is made the same way (sandbox.monitor.zygote forks it): it joins the
run's cgroups, enters the namespaces, forks PID 1, which waits on the go
socket, and says `StubReady` with PID 1's pid. The monitor then writes the
policy's limits (if the cgroups were made before the policy was known) and
sends the `Spec` and the run's descriptors, which PID 1 takes: nothing
untrusted runs before the limits are in place.

Joining a cgroup waits for an RCU grace period (5-20 ms on a busy machine
without `favordynmods`), and entering seven namespaces costs a few ms more;
none of it depends on the run. So the monitor host keeps a *spare*: a stub
made before any request, in fresh cgroups without limits, which the next
compatible run takes (`RunResult.warm`). A spare cannot serve a run that wants
the host's network (it has its own network namespace) or none at all; such a
run gets a stub made for it.
"""
from __future__ import annotations

import marshal
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from sandbox import protocol
from sandbox.errors import ProtocolError, ZygoteGone
from sandbox import fdwait
from sandbox.monitor import runspec, tree
from sandbox.isolation.libc import adopt_stdio
from sandbox.protocol import ForkStub, Pid1Start, Spec, StubReady, ViewReady
from sandbox.sandboxee import entry

T = TypeVar("T")

if TYPE_CHECKING:
    from sandbox.isolation import prebuilt
    from sandbox.monitor.cgroups import RunCgroup


class Forker(Protocol):
    """What forks a stub: sandbox.monitor.zygote.Zygotes (`generation`: which zygote)."""
    generation: int

    def fork_stub(self, req: ForkStub, fds: list[int]) -> tuple[int, int]: ...


@dataclass
class Prestarted:
    """The monitor's end of one stub."""
    stub_pid: int
    stub_fd: int                # its pidfd (from the zygote, which reaps it)
    status: socket.socket       # the stub's status socket
    setup: socket.socket        # the setup socket's monitor end (PID 1 and its layers)
    go: socket.socket           # where the spec and descriptors go
    cgroup: Any                 # RunCgroup, or None
    request: ForkStub = field(default_factory=ForkStub)
    ready: StubReady | None = None    # once read from `status`
    limits_written: bool = False      # the cgroup was made with this run's limits
    view_built: bool = False          # ... and its PID 1 built the policy's view (prebuilt.py)
    generation: int = 0               # of the zygote that forked it (Zygotes.lost)

    def compatible(self, spec: Spec) -> bool:
        """Can this (spare) stub serve `spec`: its namespaces are the ones the run
        needs (a policy for the host's network needs no network namespace)."""
        network = spec.policy.get("network")
        return (self.ready is not None and self.ready.ok and spec.namespaces
                and self.request.namespaces and isinstance(network, dict)
                and (network.get("mode") != "host") == self.request.network)

    def take_ready(self) -> StubReady | None:
        """Read the stub's `StubReady` (blocking: it is the stub's first message)."""
        if self.ready is None:
            try:
                msg, _ = protocol.recv(self.status, StubReady, max_fds=0)
            except (OSError, ProtocolError) as exc:
                msg = StubReady(ok=False, why=f"the stub failed: {exc}")
            self.ready = msg if msg is not None else StubReady(ok=False, why="the stub ended")
        return self.ready

    @property
    def pid1(self) -> int:
        """PID 1, forked ahead and waiting for the spec (0 until StubReady is read)."""
        return self.ready.pid1 if self.ready is not None and self.ready.ok else 0

    def waiting(self) -> bool:
        """The stub still waits: alive (its pidfd not readable) and silent since
        StubReady (a stub whose zygote died is neither)."""
        return not fdwait.readable([self.stub_fd, self.status.fileno()], 0)

    def discard(self) -> None:
        """Not used: end the stub (its parent, the zygote, reaps it). The cgroup is the
        caller's to remove, once the stub is gone (`cgroup.remove` waits for that). Once
        only: a second call (an event of the loop's batch that was already collected when
        an earlier one discarded it) does nothing, where a pidfd of -1 raised in the
        host's loop."""
        for s in (self.go, self.setup, self.status):
            s.close()
        if self.stub_fd >= 0:
            tree.send(self.stub_fd)
            os.close(self.stub_fd)
            self.stub_fd = -1


def recv_setup(sock: socket.socket, accept: tuple[type[T], ...]
               ) -> tuple[T | None, list[int], int]:
    """`protocol.recv` of one of `accept` on a setup socket, with the sender's pid
    (SO_PASSCRED: the kernel's word, not the sender's)."""
    data, anc, flags, _ = sock.recvmsg(protocol.DATAGRAM_MAX + 1,
                                       socket.CMSG_SPACE(4 * protocol.MAX_FDS)
                                       + socket.CMSG_SPACE(12))
    fds: list[int] = []
    sender = 0
    for level, ctype, cdata in anc:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds += [int.from_bytes(cdata[i:i + 4], "little", signed=True)
                    for i in range(0, len(cdata) - len(cdata) % 4, 4)]
        elif level == socket.SOL_SOCKET and ctype == socket.SCM_CREDENTIALS and len(cdata) >= 4:
            sender = int.from_bytes(cdata[:4], "little")
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ProtocolError("setup message or its descriptors truncated")
        if not data:
            if fds:
                raise ProtocolError("descriptors without a message")
            return None, [], sender
        return protocol.from_datagram(data, *accept), fds, sender
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def make(zygote: Forker, cgroup: "RunCgroup | None", *, namespaces: bool = True,
         network: bool = True) -> Prestarted:
    """Ask the zygote for a stub that joins `cgroup` (a RunCgroup or None) and enters the
    namespaces. Returns at once: its `StubReady` comes later on `status`. A zygote
    found dead is replaced (ZygoteGone), and the stub asked of the new one."""
    try:
        return _make(zygote, cgroup, namespaces, network)
    except ZygoteGone:
        return _make(zygote, cgroup, namespaces, network)


def _make(zygote: Forker, cgroup: "RunCgroup | None", namespaces: bool,
          network: bool) -> Prestarted:
    procs = [os.path.join(d, "cgroup.procs") for d in (cgroup.paths if cgroup else [])]
    req = ForkStub(namespaces=namespaces, network=network, cgroup_procs=procs)
    setup_parent, setup_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    setup_parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent the listener
    go_parent, go_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    status_parent, status_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid, pidfd = zygote.fork_stub(req, [status_child.fileno(), setup_child.fileno(),
                                            go_child.fileno()])
    except BaseException:
        for s in (setup_parent, go_parent, status_parent):
            s.close()
        raise
    finally:
        for s in (setup_child, go_child, status_child):
            s.close()
    return Prestarted(pid, pidfd, status_parent, setup_parent, go_parent, cgroup, req,
                      generation=zygote.generation)


class Pid1Entry:
    """In PID 1 (sandbox/sandboxee/stub.py): what it does with each start the monitor
    sends on its go socket. A PID 1 pooled at the "view" level gets one before its run
    (`prebuild`) and keeps what was built for the run's mount layer (`ctx.prebuilt`)."""

    def __init__(self, setup_fd: int) -> None:
        self.setup_fd = setup_fd
        self.view: bytes | None = None   # prebuilt.Prebuilt.to_bytes(), once built
        self.ruleset = -1                # its Landlock ruleset made ahead (Prebuilt.ahead)

    def prebuild(self, context: bytes) -> bool:
        """Have the policy's part of the view built (sandbox/isolation/prebuilt.py) and
        say `ViewReady` on the setup socket, or why not; False then (PID 1 ends: its
        namespace may hold half a view). Built by a throw-away child (apart.in_child:
        the mounts are the namespace's, and so stay), as a Python action's namespace
        layers are: the pages its Python copies die with it, and this PID 1 waits in
        the pool as small as one of the `limits` level (issue 14: <= 1 MiB per live
        exec'd program, pools included). Where ns_last_pid cannot be written (the
        child would take the program's pid 2), it is built here: more memory, same
        view."""
        from sandbox.isolation import apart
        last_pid = apart.available()
        if last_pid < 0:
            ready, self.view, self.ruleset = _prebuild(context)
        else:
            def child(sock: socket.socket) -> None:
                ready, kept, ruleset = _prebuild(context)
                socket.send_fds(sock, [marshal.dumps((ready, kept))],
                                [ruleset] if ruleset >= 0 else [])
            got, fds = apart.in_child(child, last_pid, 1)
            apart.reap()
            ready, self.view = marshal.loads(got) if got else (protocol.to_datagram(
                ViewReady(why="the view's setup process ended without an answer")), None)
            self.ruleset = fds[0] if fds and self.view is not None else -1
        mon = socket.socket(fileno=self.setup_fd)
        try:
            mon.send(ready)
        finally:
            mon.detach()
        return self.view is not None

    @property
    def built(self) -> "prebuilt.Built | None":
        """The view `prebuild` built (its record and its Landlock ruleset, -1: none), for
        a Python action's PID 1 (sandbox/sandboxee/planned.py), or None."""
        return None if self.view is None else (self.view, self.ruleset)

    def __call__(self, context: bytes, fds: list[int]) -> Callable[[], object]:
        """Once the run arrived: PID 1's main, from the pickled start's context and the
        run's descriptors (runspec.from_start)."""
        if len(fds) != 5:
            raise ProtocolError(f"the stub got {len(fds)} descriptors, not 5")
        spec, ctx = runspec.from_start(context, fds[0], fds[4], self.setup_fd)
        if self.view is not None:
            from sandbox.isolation import prebuilt
            prebuilt.attach(ctx, self.built)
        adopt_stdio(*fds[1:4])
        return lambda: entry.main(ctx, spec)


def _prebuild(context: bytes) -> tuple[bytes, bytes | None, int]:
    """Build the view of `view_start`'s context: the `ViewReady` datagram to send, the
    built view's record (Prebuilt.to_bytes), None when it could not be built, and the
    Landlock ruleset made with it (-1: none)."""
    from sandbox.errors import SetupError
    from sandbox.isolation import prebuilt
    kept: bytes | None = None
    ruleset = -1
    try:
        done = prebuilt.build(runspec.from_view_start(context))
        msg = ViewReady(ok=True, sources=[(p, d, i) for p, (d, i) in done.seen.items()],
                        dirs=list(done.stamps))
        kept, ruleset = done.to_bytes(), done.ruleset
    except SetupError as exc:
        msg = ViewReady(ok=False, why=str(exc)[:1000])
    except Exception as exc:
        msg = ViewReady(ok=False, why=f"{type(exc).__name__}: {exc}"[:1000])
    try:
        return protocol.to_datagram(msg), kept, ruleset
    except ProtocolError:   # over its bounds: more binds than it reports
        if ruleset >= 0:
            os.close(ruleset)
        return (protocol.to_datagram(ViewReady(ok=False, why="too many binds to report")),
                None, -1)


def go(pre: Prestarted, start: Pid1Start, ipc_fd: int, exit_fd: int, stdio: list[int]) -> None:
    """Hand the run to the stub's PID 1: its start (runspec.pid1_start) and ipc, the
    sandbox's stdin, stdout, stderr (sandbox.monitor.stdio) and the init's exit pipe.
    A start over one datagram goes in a sealed memfd, the first descriptor."""
    fds = [ipc_fd, *stdio, exit_fd]
    try:
        data = protocol.start_to_bytes(start)
    except ProtocolError:
        mfd = os.memfd_create("sandbox-spec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(start.context)
            while view:
                view = view[os.write(mfd, view):]
            os.lseek(mfd, 0, os.SEEK_SET)
            import fcntl
            fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                        | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
            data = protocol.start_to_bytes(Pid1Start(mode=start.mode, in_memfd=True))
            socket.send_fds(pre.go, [data], [mfd, *fds])
        finally:
            os.close(mfd)
    else:
        socket.send_fds(pre.go, [data], fds)
    pre.go.close()
