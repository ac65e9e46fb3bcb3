"""One start path (issue 14.2): the monitor's real exit status reaches the launcher,
and a run that cannot start leaves nothing behind.

Judged from the host: the launcher's result, the monitor's status as the kernel
gave it, the run directory on disk.
"""
from __future__ import annotations

import glob
import os
import signal
import socket
import tempfile
import time

import pytest

from sandbox.launcher import monitors
from sandbox.launcher.launcher import Launcher
from sandbox.monitor import main as monitor_main


def _gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


def _sandboxee_of(monitor: int) -> int | None:
    """The `sleep` under the monitor (stub -> PID 1 -> program)."""
    for _ in range(200):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read()
                with open(f"/proc/{name}/status") as f:
                    tgid_ok = any(line.startswith("NSpid:") and len(line.split()) == 3
                                  and line.split()[2] == "2" for line in f)
            except OSError:
                continue
            if cmd.startswith(b"sleep\x0077") and tgid_ok:
                return int(name)
        time.sleep(0.05)
    return None


@pytest.mark.isolation
def test_a_killed_monitor_is_reported_with_its_real_status_and_takes_the_sandbox():
    """Before: ForkedMonitor.poll() said 0 for any end, and the reason had no status."""
    with Launcher(capture_output=True) as la:
        h = la.start(["sleep", "77"], policy="default")
        program = _sandboxee_of(h.pid)
        assert program is not None
        os.kill(h.pid, signal.SIGKILL)
        r = h.wait()
    assert r.status == "error", (r.status, r.reason)
    assert r.reason == ("the monitor process ended unexpectedly "
                        "(killed by signal 9 (SIGKILL))"), r.reason
    assert _gone(program)


@pytest.mark.isolation
def test_the_fork_server_reports_a_monitors_own_exit_status():
    """A monitor whose launcher closes the control socket before any spec exits
    EXIT_NO_SPEC, and the launcher gets exactly that status, not a made-up 0."""
    server = monitors.ForkServerClient()
    ipc_parent, ipc_child = socket.socketpair()
    ctl_parent, ctl_child = socket.socketpair()
    try:
        proc, _ = monitors.start_monitor("forkserver", ipc_child, ctl_child, True,
                                         server=server)
        ipc_child.close(), ctl_child.close()
        ctl_parent.close()
        assert proc.wait(timeout=20) == monitor_main.EXIT_NO_SPEC
        assert proc.poll() == monitor_main.EXIT_NO_SPEC
        monitors.end_monitor(proc, need_status=False)
    finally:
        ipc_parent.close()
        server.close()


def _rundirs(run_id: str) -> list[str]:
    return glob.glob(os.path.join(tempfile.gettempdir(), f"sandbox-{run_id[:12]}-*"))


@pytest.mark.isolation
def test_a_run_whose_monitor_cannot_start_leaves_no_run_directory():
    """Before: Launcher._spawn returned the setup error without removing the run's
    temporary directory (and without closing its end of the IPC and control sockets)."""
    la = Launcher(capture_output=True)
    la._forkserver = monitors.ForkServerClient(["/bin/false"])
    fds_before = len(os.listdir("/proc/self/fd"))
    try:
        r = la.spawn(["true"], policy="default")
    finally:
        la.close()
    assert r.status == "setup_error" and r.reason.startswith("cannot start the monitor"), \
        (r.status, r.reason)
    assert not _rundirs(r.run_id)
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def _pid1_and_stub(marker: str) -> tuple[int, int] | None:
    """PID 1 of the sandbox running `sleep <marker>` (its init) and PID 1's parent."""
    for _ in range(200):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if not f.read().startswith(b"sleep\x00" + marker.encode()):
                        continue
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                pid1 = int(stat[stat.rfind(b")") + 2:].split()[1])
                with open(f"/proc/{pid1}/stat", "rb") as f:
                    stat = f.read()
                return pid1, int(stat[stat.rfind(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.05)
    return None


@pytest.mark.isolation
@pytest.mark.parametrize("start,spare", [("forkserver", "1"), ("forkserver", "0"),
                                         ("exec", "0")], ids=["spare", "no-spare", "exec"])
def test_no_python_interpreter_waits_between_the_monitor_and_pid1(monkeypatch, start, spare):
    """Issue 14.3: the stub that waits for PID 1 is the compiled sandbox-init in its
    --stub mode, not a forked Python interpreter (3 MiB of PSS per live sandbox); the
    run's exit status still comes through it."""
    from sandbox import _native
    monkeypatch.setenv("SANDBOX_SPARE", spare)
    marker = {"spare": "71", "no-spare": "72", "exec": "73"}[start if start == "exec" else
                                                            ("spare" if spare == "1" else
                                                             "no-spare")]
    with Launcher(capture_output=True, start=start) as la:
        la.spawn(["true"], policy="default")   # the spare, if any, is made for the next run
        h = la.start(["sleep", marker], policy="default")
        found = _pid1_and_stub(marker)
        assert found is not None
        pid1, stub = found
        stub_exe = os.readlink(f"/proc/{stub}/exe")
        with open(f"/proc/{stub}/cmdline", "rb") as f:
            stub_argv = f.read().split(b"\0")
        os.kill(pid1, signal.SIGTERM)   # from the host: the init forwards it to the program
        r = h.wait()
    assert os.path.realpath(stub_exe) == os.path.realpath(_native.init_path()), stub_exe
    assert stub_argv[:2] == [b"sandbox-stub", b"--stub"], stub_argv
    assert r.status == "signaled" and r.signal == signal.SIGTERM, (r.status, r.reason)
