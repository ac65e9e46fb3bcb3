"""The monitor signals processes by pidfd, never by number (issue 11, "kill by pidfd").

Attack: a pid the monitor read (PID 1's from the stub, a cgroup member's from
cgroup.procs) is reaped and handed to an unrelated process before the signal.
The test makes that happen for real: in a private user + PID + mount namespace
(with its own /proc), it frees a pid, sets ns_last_pid so that the next fork
takes the same number, and gives the number to an innocent process. Judged by
whether the innocent survives. Before the fix both tests below killed it.
"""
from __future__ import annotations

import os
import signal
import socket
import time
import types
from typing import Callable

import pytest

from sandbox import protocol
from sandbox.isolation import libc, namespaces
from sandbox.monitor import cgroups, tree
from sandbox.monitor.supervisor import Supervisor

pytestmark = pytest.mark.isolation


def _in_private_pid_ns(body: Callable[[], str]) -> str:
    """Run body() as PID 1 of a new user+pid+mount namespace with its own /proc;
    return what it returned (or its exception)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        out = "unexpected"
        try:
            uid, gid = os.getuid(), os.getgid()
            libc.unshare(libc.CLONE_NEWUSER | libc.CLONE_NEWPID | libc.CLONE_NEWNS)
            namespaces.map_self(uid, gid)
            init = os.fork()
            if init == 0:
                try:
                    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
                    libc.mount("proc", "/proc", "proc", libc.MS_NOSUID | libc.MS_NODEV)
                    out = body()
                except BaseException as exc:  # report, never hang the parent
                    out = f"{type(exc).__name__}: {exc}"
                os.write(w, out.encode())
                os._exit(0)
            os.waitpid(init, 0)
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 4096)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


def _recycled_pid() -> tuple[int, int]:
    """(n, innocent): a pid n that belonged to a process now reaped, and the pid of
    an unrelated sleeping process that was given the same number."""
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(gone - 1))
    innocent = os.fork()
    if innocent == 0:
        time.sleep(60)
        os._exit(0)
    return gone, innocent


def _alive(pid: int) -> bool:
    """Not yet reaped and not killed: WNOHANG says whether it ended."""
    got, _ = os.waitpid(pid, os.WNOHANG)
    return got == 0


def _supervisor_kill_stale_pid1() -> str:
    stub = os.fork()            # the run's stub: alive, never PID 1's parent here
    if stub == 0:
        time.sleep(60)
        os._exit(0)
    n, innocent = _recycled_pid()
    if n != innocent:
        return f"setup: pid {n} was not reused (got {innocent})"
    sup = Supervisor.__new__(Supervisor)   # only the parts _status_message/kill use
    sup.ctx = types.SimpleNamespace(namespaces=True)
    sup.cgroup, sup.stub_pid, sup.pid1_fd, sup.status = None, stub, None, None
    sup.stub_fd, sup.stub = None, None        # no pidfd of the stub: nothing to kill by it
    sup.t0, sup.timings = time.monotonic(), {}
    sup._pid1_started(n)    # PID 1 already gone, its number reused (StubReady's pid1)
    sup.ctx.policy = types.SimpleNamespace(limits=types.SimpleNamespace(processes=1))
    sup.report = types.SimpleNamespace(max_tasks=0, pids_limit_hit=False)
    sup._sample_tasks()                          # must not count the innocent's tree
    if sup.report.max_tasks or sup.report.pids_limit_hit:
        return "counted the innocent"
    sup.kill()
    time.sleep(0.05)
    verdict = "innocent alive" if _alive(innocent) else "innocent killed"
    for p in (stub, innocent):
        try:
            os.kill(p, signal.SIGKILL)  # the test's own children, not yet reaped
        except ProcessLookupError:
            pass
    return verdict


def _cgroup_kill_all_stale_member(tmp: str) -> str:
    n, innocent = _recycled_pid()
    if n != innocent:
        return f"setup: pid {n} was not reused (got {innocent})"
    d = os.path.join(tmp, "fake-cgroup")
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "cgroup.procs"), "w").close()
    run = cgroups.RunCgroup("fake", {"pids": ("v1", d)})
    listings = iter([{n}, {n}])   # read before the member left; then the truth
    run.procs = lambda: next(listings, set())  # type: ignore[method-assign]
    run.kill_all(timeout=0.2)
    time.sleep(0.05)
    verdict = "innocent alive" if _alive(innocent) else "innocent killed"
    try:
        os.kill(innocent, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return verdict


def test_supervisor_never_signals_a_recycled_pid1():
    assert _in_private_pid_ns(_supervisor_kill_stale_pid1) == "innocent alive"


def test_cgroup_kill_all_never_signals_a_recycled_member(tmp_path):
    os.chmod(tmp_path, 0o777)
    assert _in_private_pid_ns(lambda: _cgroup_kill_all_stale_member(str(tmp_path))) \
        == "innocent alive"


def test_signal_listed_kills_listed_members():
    """The positive side: a member listed both times is signalled through its pidfd."""
    kids = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        kids.append(pid)
    assert tree.signal_listed(lambda: kids) == 3
    for pid in kids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def test_pidfd_holds_is_false_once_reaped():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    fd = os.pidfd_open(pid)
    try:
        time.sleep(0.05)
        assert tree.pidfd_holds(fd, pid)          # a zombie still owns its number
        os.waitpid(pid, 0)
        assert not tree.pidfd_holds(fd, pid)
        assert not tree.send(fd)                  # ESRCH, never another process
    finally:
        os.close(fd)
