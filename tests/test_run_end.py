"""The monitor's end of a run starts on the stub's last message, not on its exit.

The stub's waiter (`sandbox-init --stub`, init.c) writes `pid1_exit` once PID 1 and
every process left of the run are reaped, and says nothing after it; its status
socket reaches its end only when the stub itself has exited, after the kernel tore
its namespaces down. The run is over at the message (docs/benchmarks-journal.md, "From
ready to exited"); the cgroup, which the exiting stub is still in, goes once it
is gone (`Supervisor.cleanup`).
"""
from __future__ import annotations

import socket
from typing import Any

from sandbox import protocol
from sandbox.ipc.channel import Channel
from sandbox.monitor import runspec
from sandbox.monitor.supervisor import Supervisor
from sandbox.policy import build_plan, default_variables, load_policy, resolve
from sandbox.protocol import Pid1Exited


class _Loop:
    """The host loop's side a supervisor uses here: what it watches."""

    def __init__(self) -> None:
        self.watched: set[Any] = set()

    def watch(self, fileobj: Any, callback: Any) -> None:
        self.watched.add(fileobj)

    def unwatch(self, fileobj: Any) -> None:
        self.watched.discard(fileobj)

    def take_spare(self, spec: Any, ctx: Any = None) -> Any:
        return None


def _supervisor() -> tuple[Supervisor, list[socket.socket]]:
    pol = resolve(load_policy("strict"), default_variables("/", "/"))
    spec = protocol.Spec(run_id="end-test", mode="workflow", policy=pol.to_dict(),
                         fs_plan=build_plan(pol).to_dict(), ipc_fd=-1)
    ctl, ctl_peer = socket.socketpair()
    sup = Supervisor(spec, runspec.build_context(spec), Channel(ctl.detach()), _Loop(), [])
    return sup, [ctl_peer]


def test_the_run_is_done_at_pid1_exit_while_the_stub_is_still_there():
    sup, keep = _supervisor()
    ours, stub_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sup.status_open = True      # as when the run took its stub
        protocol.send(stub_end, Pid1Exited(status=0, utime_us=10, stime_us=20, max_rss_kib=5))
        assert sup._status_message(ours)
        # the stub's end is still open (it has not exited): the run is over anyway
        assert sup.done, "the run waited for the stub's exit after its last message"
        assert sup.status == 0 and "exited" in sup.timings
    finally:
        for s in (ours, stub_end, *keep):
            s.close()
        sup.ctl.close()


def test_a_setup_failure_still_waits_for_the_stub_to_end():
    """Any other message of the stub is not its last: the socket's end says so."""
    sup, keep = _supervisor()
    ours, stub_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sup.status_open = True
        protocol.send(stub_end, protocol.SetupFailure("namespaces", "no"))
        assert sup._status_message(ours)
        assert sup.status == -1 and not sup.done
        stub_end.close()
        assert not sup._status_message(ours)   # its end: the host's on_status closes it
    finally:
        for s in (ours, stub_end, *keep):
            s.close()
        sup.ctl.close()



class _Stub:
    """A supervisor holding a stub's status and setup sockets; the other ends are the
    stub's (`status_end`) and PID 1's (`setup_end`)."""

    def __enter__(self) -> "_Stub":
        from types import SimpleNamespace
        self.sup, self.keep = _supervisor()
        self.status, self.status_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.setup, self.setup_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sup.stub = SimpleNamespace(status=self.status, setup=self.setup, go=None,
                                        generation=0)
        self.sup.status_open = True      # as when the run took its stub
        return self

    def __exit__(self, *exc: object) -> None:
        for s in (self.status, self.status_end, self.setup, self.setup_end, *self.keep):
            s.close()
        self.sup.ctl.close()


def test_what_pid1_sent_before_the_end_is_read_when_the_last_word_comes_first():
    """The host reads one message per readiness of a socket: under load the stub's
    `Pid1Exited` can be read in the same turn as the first of several messages queued
    on the setup socket. The run must not end with `Ready` (the layers) or an
    `ExecError` unread (before: the report's layers were [] and no exec error)."""
    with _Stub() as st:
        protocol.send(st.setup_end, protocol.Ready(active=["namespaces", "mounts"]))
        protocol.send(st.setup_end, protocol.ExecError(
            protocol.ExecFailure(program="nope", path="nope", errno=2, searched=True),
            message="nope: No such file or directory"))
        st.setup_end.close()                       # PID 1 and PID 2 are gone
        protocol.send(st.status_end, Pid1Exited(status=127 << 8))
        st.sup.on_status()
        assert st.sup.done
        assert st.sup.report.layers == ["namespaces", "mounts"]
        assert st.sup.report.exec_error == "nope: No such file or directory"


def test_draining_the_setup_socket_never_waits_for_a_live_sender():
    """A sender still holding its end (nothing queued) does not hold the loop."""
    with _Stub() as st:
        protocol.send(st.status_end, Pid1Exited(status=0))
        st.sup.on_status()                # returns: setup_end is open, nothing queued
        assert st.sup.done and st.sup.report.layers == []
