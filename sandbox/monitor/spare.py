"""A spare monitor: the slow first steps of a sandbox, done before it is asked for.

Joining a cgroup waits for an RCU grace period (5-20 ms on a busy machine
without `favordynmods`), and forking the stub and entering seven namespaces
costs a few milliseconds more; none of it depends on the run. So the fork
server keeps one spare: a monitor that has already made the run's cgroups
(without limits yet), forked a stub that joined them and entered every
namespace, and waits. When a request comes, the fork server hands the run's
descriptors to the spare instead of forking a monitor, and makes the next
spare while the run goes on. The spare then writes the policy's limits,
sends the spec and the run's descriptors to its stub, and the stub forks PID 1
as any stub does: nothing untrusted runs before the limits are in place.

The spare's process is started by the fork server and becomes a monitor
through the same function as any other (`sandbox.monitor.main`); this module
only makes and hands over the prestarted stub.

A spare that cannot serve a run (the policy wants the host's network, while
the stub already has its own network namespace; or entering the namespaces
failed) discards its stub and starts a fresh one: it is never wrong, only
not faster.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from sandbox import _native, protocol
from sandbox.errors import ProtocolError
from sandbox.isolation.libc import adopt_stdio
from sandbox.monitor import runspec, tree
from sandbox.policy.model import Limits
from sandbox.protocol import Spec, StubReady
from sandbox.sandboxee import entry, stub


@dataclass
class Prestarted:
    stub_pid: int
    status: socket.socket       # the stub's status socket (StubReady already read)
    setup: socket.socket        # the setup socket's monitor end
    go: socket.socket           # where the spec and descriptors go
    cgroup: Any                 # RunCgroup without limits yet, or None
    ok: bool                    # namespaces entered
    why: str = ""

    def compatible(self, spec: Spec) -> bool:
        """One datagram carries the spec to the stub (protocol.DATAGRAM_MAX); a larger
        spec (a plan with thousands of masks) takes the ordinary path."""
        network = spec.policy.get("network")
        if not self.ok or not spec.namespaces or not isinstance(network, dict) \
                or network.get("mode") == "host":
            return False
        try:
            protocol.to_datagram(spec)
        except ProtocolError:
            return False
        return True

    def discard(self) -> None:
        """Not used for this run: end the stub, free its cgroup."""
        for s in (self.go, self.setup):
            s.close()
        fd = tree.open_pidfd(self.stub_pid)  # our child, not yet reaped
        if fd is not None:
            tree.send(fd)
            os.close(fd)
        try:
            os.waitpid(self.stub_pid, 0)
        except ChildProcessError:
            pass
        self.status.close()
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


def _start_pid1(setup_fd: int) -> Callable[[Spec, list[int]], Callable[[], Any]]:
    """In the stub, once the spec arrives: PID 1's main, with the run's descriptors."""
    def start(spec: Spec, fds: list[int]) -> Callable[[], Any]:
        if len(fds) != 5:
            raise ProtocolError(f"the spare's stub got {len(fds)} descriptors, not 5")
        adopt_stdio(*fds[1:4])
        runspec.use_ipc_fd(spec, fds[0])
        ctx = runspec.build_context(spec)
        ctx.monitor_fd = setup_fd
        ctx.exit_fd = fds[4]
        ctx.cgroup_memory = spec.cgroup_memory
        ctx.cgroup_view = tuple(spec.cgroup_view)
        return lambda: entry.main(ctx, spec)
    return start


def prestart() -> Prestarted:
    """Make the cgroups and fork the stub, which joins them and enters the namespaces."""
    from sandbox.monitor import cgroups
    cg = None
    try:
        cg = cgroups.create(f"spare{os.getpid()}", Limits(), support=cgroups.probe_cached())
    except (OSError, ValueError):
        cg = None
    setup_parent, setup_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    setup_parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # who sent the listener
    go_parent, go_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    status_parent, status_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        setup_parent.close()
        go_parent.close()
        status_parent.close()
        stub.run_waiting(status_child, go_child, cg.join if cg is not None else None,
                         _start_pid1(setup_child.detach()), _native.INIT_PATH)
    status_child.close()
    setup_child.close()
    go_child.close()
    try:
        ready, _ = protocol.recv(status_parent, StubReady, max_fds=0)
    except (OSError, ProtocolError) as exc:
        ready = StubReady(ok=False, why=str(exc))
    if ready is None:
        ready = StubReady(ok=False, why="the stub ended")
    return Prestarted(pid, status_parent, setup_parent, go_parent, cg, ready.ok, ready.why)


def go(pre: Prestarted, spec: Spec, ipc_fd: int, exit_fd: int, stdio: list[int]) -> None:
    """Hand the run to the prestarted stub: the spec and ipc, the sandbox's stdin, stdout,
    stderr (sandbox.monitor.stdio) and the init's exit pipe."""
    protocol.send(pre.go, spec, [ipc_fd, *stdio, exit_fd])
    pre.go.close()
