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

A spare that cannot serve a run (the policy wants the host's network, while
the stub already has its own network namespace; or entering the namespaces
failed) discards its stub and starts a fresh one: it is never wrong, only
not faster.
"""
from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

import prctl

from sandbox.ipc.channel import Channel
from sandbox.isolation.libc import adopt_stdio
from sandbox.monitor import tree
from sandbox.policy.model import Limits
from sandbox.protocol import EXIT_REPORT_MAX
from sandbox.sandboxee import entry, stub


# One SOCK_SEQPACKET message carries the spec to the stub; it must fit the
# socket's send buffer (net.core.wmem_default, ~208 KiB): larger specs (a plan
# with thousands of masks) take the ordinary path.
GO_LIMIT = 150_000


@dataclass
class Prestarted:
    stub_pid: int
    status_fd: int              # the stub's status pipe (first line already read)
    setup: socket.socket        # the setup socket's monitor end
    go: socket.socket           # where the spec and descriptors go
    cgroup: Any                 # RunCgroup without limits yet, or None
    ok: bool                    # namespaces entered
    why: str = ""

    def compatible(self, spec: dict[str, Any]) -> bool:
        return (self.ok and spec["policy"]["network"]["mode"] != "host"
                and spec.get("namespaces", True)
                and len(json.dumps(spec)) < GO_LIMIT)

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
        os.close(self.status_fd)
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


def _start_pid1(setup_fd: int):
    """In the stub, once the spec arrives: PID 1's main, with the run's descriptors."""
    from sandbox.monitor.main import build_context, use_ipc_fd

    def start(spec: dict[str, Any], fds: list[int]):
        adopt_stdio(*fds[1:4])
        use_ipc_fd(spec, fds[0])
        ctx = build_context(spec)
        ctx.monitor_fd = setup_fd
        ctx.exit_fd = fds[4] if len(fds) > 4 else -1
        ctx.cgroup_memory = bool(spec.get("cgroup_memory"))
        ctx.cgroup_view = tuple(str(c) for c in spec.get("cgroup_view") or ())
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
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        setup_parent.close()
        go_parent.close()
        os.close(rfd)
        stub.run_waiting(wfd, go_child.detach(), cg.join if cg is not None else None,
                         _start_pid1(setup_child.detach()))
    os.close(wfd)
    setup_child.close()
    go_child.close()
    first = b""
    while not first.endswith(b"\n"):
        chunk = os.read(rfd, 1)
        if not chunk:
            break
        first += chunk
    word = first.decode(errors="replace").strip()
    ok = word == "prestarted ok"
    return Prestarted(pid, rfd, setup_parent, go_parent, cg, ok, word)


def go(pre: Prestarted, spec: dict[str, Any], ipc_fd: int, exit_fd: int,
       stdio: list[int]) -> None:
    """Hand the run to the prestarted stub: the spec and ipc, the sandbox's stdin, stdout,
    stderr (sandbox.monitor.stdio) and the init's exit pipe."""
    data = json.dumps(spec).encode()
    socket.send_fds(pre.go, [data], [ipc_fd, *stdio, exit_fd])
    pre.go.close()


def serve(sock: socket.socket, launcher_pid: int) -> int:
    """The spare's life: prestart, wait for a run's descriptors, then monitor it."""
    from sandbox.monitor import main as monitor_main
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    parent = os.getppid()
    prctl.set_pdeathsig(signal.SIGKILL)
    # ^C and ^\ at the caller's terminal reach its whole process group, this process
    # included: they are the program's (the launcher relays them), not the monitor's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    # A caller in the background (`sandbox exec ... &`) must not be stopped because
    # the stdin relay reads its terminal: the read fails (EIO), the program sees EOF.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    if os.getppid() != parent:
        return 3
    prctl.set_child_subreaper(1)
    pre = prestart()
    data, fds, _, _ = socket.recv_fds(sock, 4096, 8)
    sock.close()
    if not data or len(fds) != 5:
        pre.discard()
        return 0
    ipc_fd, ctl_fd = fds[:2]
    adopt_stdio(*fds[2:5])
    os.set_inheritable(ipc_fd, True)
    return monitor_main.serve(Channel(ctl_fd, max_frame=EXIT_REPORT_MAX), ipc_fd,
                              prestarted=pre)
