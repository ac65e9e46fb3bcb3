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

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

from sandbox import protocol
from sandbox.errors import ProtocolError, ZygoteGone
from sandbox import fdwait
from sandbox.monitor import runspec, tree
from sandbox.isolation.libc import adopt_stdio
from sandbox.protocol import ForkStub, Pid1Start, Spec, StubReady
from sandbox.sandboxee import entry

if TYPE_CHECKING:
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
        caller's to remove, once the stub is gone (`cgroup.remove` waits for that)."""
        for s in (self.go, self.setup, self.status):
            s.close()
        tree.send(self.stub_fd)
        os.close(self.stub_fd)
        self.stub_fd = -1


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


def start_pid1(setup_fd: int) -> Callable[[bytes, list[int]], Callable[[], object]]:
    """In PID 1, once the run arrived: its main, from the pickled start's context and the
    run's descriptors (runspec.from_start)."""
    def start(context: bytes, fds: list[int]) -> Callable[[], object]:
        if len(fds) != 5:
            raise ProtocolError(f"the stub got {len(fds)} descriptors, not 5")
        spec, ctx = runspec.from_start(context, fds[0], fds[4], setup_fd)
        adopt_stdio(*fds[1:4])
        return lambda: entry.main(ctx, spec)
    return start


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
