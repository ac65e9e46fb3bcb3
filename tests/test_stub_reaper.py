"""The stub is the run's reaper: nothing of a run outlives its report, and the run's
CPU and memory are counted per run, never from the monitor's process-wide figures.

Issue 14's monitor is one process for every sandbox, and the zygote forks the stubs,
so neither may stand in for "this run": not its RUSAGE_CHILDREN (every run's
children, and none of them once the zygote forks the stubs), not its own
descendants (every run's), not a subreaper flag of its own. The stub (the compiled
``sandbox-init --stub``, or the Python stub when the exec fails) is what is per run:

- it reports PID 1's resource usage with its exit (`Pid1Exited`: wait4 of PID 1,
  which reaps its whole tree), plus whatever else it reaped;
- it is a child subreaper, so without a PID namespace (best_effort on a machine
  without user namespaces) a double-forked `setsid()` daemon re-parents to it, and
  when PID 1 ends it kills and reaps every remaining descendant *before* it reports.

Judged from the host: a process that escaped is alive in the host's /proc after
the report (its pid *and* start time, so a recycled pid is not mistaken for it).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import pytest

from sandbox import _native, protocol
from sandbox.protocol import Pid1Exited, StubReady

pytestmark = pytest.mark.isolation


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rfind(b")") + 2:].split()[19])


def alive(pid: int, started: int) -> bool:
    return start_time(pid) == started


def kill_if_alive(pid: int, started: int) -> None:
    """Clean up after a failed assertion: an escapee must not outlive the test."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        if alive(pid, started):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


# -- the attack: a double-forked setsid() daemon in a run without a PID namespace ---

DAEMON = r"""
import os, time
out = os.environ['SANDBOX_OUTPUT']
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()                       # out of the program's session and process group
    if os.fork() == 0:                # and out of its parent: an orphan, a daemon
        os.close(r)
        stat = open('/proc/self/stat', 'rb').read()
        started = stat[stat.rfind(b')') + 2:].split()[19].decode()
        with open(out + '/daemon', 'w') as f:
            f.write(f'{os.getpid()} {started}')
        os.write(w, b'x')
        os.close(w)
        for i in range(600):          # a minute, writing a heartbeat
            with open(out + '/heartbeat', 'w') as f:
                f.write(str(i))
            time.sleep(0.1)
        os._exit(0)
    os._exit(0)
os.close(w)
assert os.read(r, 1) == b'x'
print('ran')
"""


def test_a_double_forked_setsid_daemon_does_not_outlive_a_run_without_a_pid_namespace(tmp_path):
    """best_effort without user namespaces: no PID namespace takes the daemon down
    with PID 1. It must still be gone, killed and reaped, when the run's result
    comes back."""
    from test_fail_closed import run
    res = run(tmp_path, "userns", True, code=DAEMON, label="-daemon")
    out = tmp_path / "out-userns-True-daemon"
    pid, started = (int(x) for x in (out / "daemon").read_text().split())
    try:
        assert res["status"] == "ok" and res["stdout"].strip() == "ran", res
        assert "namespaces" in res["skipped"], res["skipped"]   # really no PID namespace
        assert not alive(pid, started), "the daemon outlived its run"
    finally:
        kill_if_alive(pid, started)


# -- the stub itself: compiled (`sandbox-init --stub`) and the Python fallback -------

def _run_stub(pid1_main, *, compiled: bool) -> tuple[StubReady, Pid1Exited, float]:
    """Fork a stub the way the monitor does (status socket, PID 1's main), as the
    compiled waiter or the Python one; its two messages and when the second came."""
    from sandbox.sandboxee import stub
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            parent.close()
            # stdio: the stub closes 0, 1, 2 (only the run's copies are its own)
            stub._fork_pid1_and_wait(child, pid1_main,
                                     _native.init_path() if compiled else None)
        finally:
            os._exit(99)
    child.close()
    try:
        started, _ = protocol.recv(parent, StubReady, max_fds=0)
        exited, _ = protocol.recv(parent, Pid1Exited, max_fds=0)
        at = time.monotonic()
        assert isinstance(started, StubReady) and started.ok and started.pid1 > 0
        assert isinstance(exited, Pid1Exited)
        _, st = os.waitpid(pid, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0, st
        return started, exited, at
    finally:
        parent.close()


BOTH = pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])


@BOTH
def test_the_stub_reports_the_cpu_and_memory_of_pid1_and_all_it_reaped(compiled):
    """PID 1 forks a child that burns CPU and touches 64 MiB, and reaps it: the stub's
    Pid1Exited carries that child's CPU time and peak memory (wait4 of PID 1)."""
    def pid1():
        kid = os.fork()
        if kid == 0:
            block = bytearray(64 << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            t = time.process_time()
            while time.process_time() - t < 0.3:
                pass
            os._exit(0)
        os.waitpid(kid, 0)
        os._exit(3)
    _, exited, _ = _run_stub(pid1, compiled=compiled)
    assert os.WIFEXITED(exited.status) and os.WEXITSTATUS(exited.status) == 3
    assert (exited.utime_us + exited.stime_us) / 1e6 >= 0.3
    assert exited.max_rss_kib * 1024 >= 64 << 20


@BOTH
def test_the_stub_kills_and_reaps_every_orphan_before_it_reports(compiled):
    """PID 1 double-forks setsid() daemons (a chain of them, each forking the next)
    and exits at once. The daemons re-parent to the stub (its subreaper); when the
    stub reports, none of them is alive any more, and their CPU is counted."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()

    def pid1():
        os.close(r)
        if os.fork() == 0:
            os.setsid()
            for _ in range(3):          # a chain: each daemon forks the next, then spins
                if os.fork() != 0:
                    break
            stat = open("/proc/self/stat", "rb").read()
            os.write(w, f"{os.getpid()} {stat[stat.rfind(b')') + 2:].split()[19].decode()}\n"
                     .encode())
            os.close(w)                 # the test reads to the end: never held by a daemon
            t = time.process_time()
            while time.process_time() - t < 0.05:
                pass
            os.write(ready_w, b"x")
            while True:
                time.sleep(1)
        for _ in range(4):              # PID 1 ends once every daemon runs
            assert os.read(ready_r, 1) == b"x"
        os._exit(0)
    daemons: list[tuple[int, ...]] = []
    try:
        _, exited, _ = _run_stub(pid1, compiled=compiled)
        for fd in (w, ready_r, ready_w):
            os.close(fd)
        w = -1
        with os.fdopen(r, "rb") as f:
            r = -1
            daemons = [tuple(int(x) for x in line.split()) for line in f.read().splitlines()]
        assert len(daemons) == 4, daemons
        assert [d for d in daemons if alive(*d)] == []
        assert (exited.utime_us + exited.stime_us) / 1e6 >= 4 * 0.05
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)
        for d in daemons:
            kill_if_alive(*d)


@BOTH
def test_a_killed_pid1_is_reported_with_its_signal(compiled):
    def pid1():
        os.kill(os.getpid(), signal.SIGKILL)
    _, exited, _ = _run_stub(pid1, compiled=compiled)
    assert os.WIFSIGNALED(exited.status) and os.WTERMSIG(exited.status) == signal.SIGKILL


def test_the_compiled_messages_fit_the_buffers_init_c_writes_them_from():
    """init.c writes Pid1Exited and ProgramExited from fixed buffers (MSG_MAX): the
    largest envelope the protocol allows for each must fit."""
    src = open(_native.SOURCE).read()
    size = int(src.split("#define MSG_MAX", 1)[1].split()[0])
    for cls in (protocol.Pid1Exited, protocol.ProgramExited):
        assert protocol.envelope_max(cls) < size, cls


def test_a_run_reports_its_own_cpu_time_from_its_stub(launcher, py):
    """The run's cpu_time comes from its own stub: a child that burns 0.3 s of CPU
    and is reaped by the program is counted."""
    r = launcher.spawn([py, "-I", "-c",
                        "import os, time\n"
                        "if os.fork() == 0:\n"
                        "    t = time.process_time()\n"
                        "    while time.process_time() - t < 0.3: pass\n"
                        "    os._exit(0)\n"
                        "os.wait()\n"])
    assert r.status == "ok", r.reason
    assert r.cpu_time >= 0.3, r.cpu_time
    assert r.max_rss > 0
