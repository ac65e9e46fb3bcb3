"""Seccomp user notification: the listener handed to a monitor, and `kill` violations.

Each test forks a child that installs a filter with a listener (through the
layer's `install`, or its `apply` entry point) and passes the listener fd to
the parent over a socketpair with SCM_RIGHTS, as the sandboxee entry code does.
The parent plays the monitor.
"""
from __future__ import annotations

import errno
import os
import signal
import socket
import threading

import pytest

from probes import syscalls as probe
from sandbox.isolation import seccomp
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.monitor import seccomp_notify as sn
from sandbox.policy.model import AuditPolicy, NetworkPolicy, Policy, SyscallPolicy
from sandbox.policy.plan import FsPlan

pytestmark = pytest.mark.isolation


class Child:
    """A forked child that installs a filter, sends its listener, then runs `body(sock)`."""

    def __init__(self, setup, body):
        self.sock, theirs = socket.socketpair()
        self.pid = os.fork()
        if self.pid == 0:
            code = 0
            try:
                self.sock.close()
                import prctl
                prctl.set_no_new_privs(1)
                fd = setup()
                socket.send_fds(theirs, [b"L"], [fd])
                os.close(fd)
                theirs.recv(1)                    # wait until the monitor is ready
                theirs.sendall(repr(body()).encode())
            except BaseException:  # reported through the exit code
                import traceback
                traceback.print_exc()
                code = 70
            os._exit(code)
        theirs.close()
        _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
        assert fds, "the child sent no listener"
        self.listener = sn.Listener(fds[0])

    def go(self) -> None:
        self.sock.sendall(b"g")

    def result(self) -> str:
        return self.sock.recv(4096).decode()

    def wait(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.listener.close()
        self.sock.close()
        return status


def install(policy: SyscallPolicy, notify=frozenset(), via=False):
    prog = seccomp.compile_program(policy, notify=notify, kill_via_notify=via)
    return lambda: seccomp.install(prog, listener=True)


def opens() -> list:
    out = []
    for path in ("/etc/hostname", "/etc/passwd"):
        try:
            os.close(os.open(path, os.O_RDONLY))
            out.append("ok")
        except OSError as exc:
            out.append(errno.errorcode[exc.errno])
    return out


def test_kernel_struct_sizes():
    sizes = sn.notif_sizes()
    assert sizes.notif >= 80 and sizes.resp >= 24 and sizes.data >= 64


@pytest.mark.parametrize("sync", [False, True], ids=["plain", "sync_wakeup"])
def test_recv_read_path_continue_and_error(sync):
    child = Child(install(SyscallPolicy(), {"openat"}), opens)
    if sync:
        child.listener.set_sync_wakeup()
    child.go()
    seen = []
    for answer in ("continue", "error"):
        n = child.listener.recv()
        assert n is not None and n.name == "openat" and n.pid == child.pid
        seen.append(child.listener.read_path(n.pid, n.args[1], n.id))
        assert child.listener.id_valid(n.id)
        if answer == "continue":
            assert child.listener.respond_continue(n.id)
        else:
            assert child.listener.respond_error(n.id, errno.EACCES)
        assert not child.listener.id_valid(n.id)
    assert seen == ["/etc/hostname", "/etc/passwd"]
    assert child.result() == repr(["ok", "EACCES"])
    assert os.waitstatus_to_exitcode(child.wait()) == 0


def test_respond_value_and_addfd(tmp_path):
    secret = tmp_path / "brokered"
    secret.write_text("from the monitor")

    def body():
        fd = os.open("/etc/hostname", os.O_RDONLY)     # answered with our descriptor
        data = os.read(fd, 100).decode()
        return [data, probe.call("uname", bytes(400))]
    child = Child(install(SyscallPolicy(), {"openat", "uname"}), body)
    child.go()
    n = child.listener.recv()
    assert n.name == "openat"
    with open(secret, "rb") as f:
        newfd = child.listener.addfd(n.id, f.fileno(), sn.SECCOMP_ADDFD_FLAG_SEND)
    assert newfd >= 3
    n = child.listener.recv()
    assert n.name == "uname" and child.listener.respond_value(n.id, 0)
    assert child.result() == repr(["from the monitor", "ok"])
    assert os.waitstatus_to_exitcode(child.wait()) == 0


def test_kill_violation_names_the_syscall():
    pol = SyscallPolicy(on_violation="kill")
    child = Child(install(pol, via=True), lambda: probe.call("ptrace", 0, 0, 0, 0))
    table = seccomp.table_for(pol)
    child.go()
    n = child.listener.recv()
    v = sn.violation_of(n, table)
    assert v == sn.Violation("ptrace", 101, n.args, child.pid)
    os.kill(child.pid, signal.SIGKILL)         # what the monitor does with a violation
    status = child.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_apply_with_audit_and_kill_shares_one_listener():
    """The layer entry point: audit notifications are not violations, denied calls are."""
    # network "host": with a private network sendmsg is mediated too, and this child
    # sends its listener with sendmsg (the sandboxee names it instead: entry.py)
    pol = Policy(syscalls=SyscallPolicy(on_violation="kill", deny=("uname",)),
                 audit=AuditPolicy(files="all"), network=NetworkPolicy(mode="host"))
    ctx = ContainContext(policy=pol, paths=RunPaths("/", "/", "/", "/tmp"), fs_plan=FsPlan(),
                         ipc_fd=-1, monitor_fd=-1, audit_files="all")

    def setup():
        seccomp.apply(ctx)
        assert ctx.active == ["seccomp:default"] and ctx.listener_fd is not None
        return ctx.listener_fd

    def body():
        os.close(os.open("/etc/hostname", os.O_RDONLY))
        return probe.call("uname", bytes(400))
    child = Child(setup, body)
    table = seccomp.table_for(pol.syscalls, seccomp.notify_set_for("all"))
    child.go()
    n = child.listener.recv()
    assert n.name == "openat" and sn.violation_of(n, table) is None
    assert child.listener.read_path(n.pid, n.args[1], n.id) == "/etc/hostname"
    child.listener.respond_continue(n.id)
    n = child.listener.recv()
    v = sn.violation_of(n, table)
    assert v is not None and v.syscall == "uname" and "uname" in v.describe()
    child.listener.respond_error(n.id, errno.EPERM)
    assert child.result() == repr("EPERM")
    assert os.waitstatus_to_exitcode(child.wait()) == 0


def test_kill_without_listener_is_sigsys():
    prog = seccomp.compile_program(SyscallPolicy(on_violation="kill"))

    def fn():
        import prctl
        prctl.set_no_new_privs(1)
        seccomp.install(prog)
        return probe.call("ptrace", 0, 0, 0, 0)
    assert probe.in_child(fn) == ("signal", "SIGSYS")


def test_tsync_covers_threads_started_before():
    prog = seccomp.compile_program(SyscallPolicy())

    def fn():
        import prctl
        prctl.set_no_new_privs(1)
        go, out = threading.Event(), []
        t = threading.Thread(target=lambda: (go.wait(), out.append(probe.call("bpf", 0, 0, 0))))
        t.start()
        seccomp.install(prog)
        go.set()
        t.join()
        return out[0]
    assert probe.in_child(fn) == ("exit", "EPERM")


def test_read_path_of_a_vanished_process_fails():
    child = Child(install(SyscallPolicy(), {"openat"}), opens)
    child.go()
    n = child.listener.recv()
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)
    with pytest.raises(OSError):
        child.listener.read_path(n.pid, n.args[1], n.id)
    assert not child.listener.id_valid(n.id)
    assert child.listener.respond_continue(n.id) is False
    child.listener.close()
