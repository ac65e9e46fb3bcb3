"""Issue 4, observed from inside: a probe in the sandbox reports what it can do.

Runs as root and as an unprivileged user (CI runs the suite twice).
"""
from __future__ import annotations

import errno
import os
import pty
import socket
import sys

import pytest

from sandbox.launcher.launcher import Launcher

pytestmark = pytest.mark.isolation

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes", "isolation_probe.py")


def probe(policy: str = "strict", *, stdout_tty: bool = False, env=None):
    """Run the probe; return (RunResult, report). stdout_tty: a pty as the sandbox's stdout."""
    code = open(PROBE).read()
    got = {}
    launcher = Launcher(capture_output=not stdout_tty)
    saved = None
    if stdout_tty:
        master, slave = pty.openpty()
        saved = os.dup(1)
        os.dup2(slave, 1)
    try:
        r = launcher.spawn([sys.executable, "-I", "-c", code], policy=policy, env=env,
                           handlers={"probe": lambda m, i: got.update(m.payload)})
    finally:
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(slave)
    if stdout_tty:
        os.set_blocking(master, False)
        try:
            injected = os.read(master, 1024)
        except OSError:
            injected = b""
        os.close(master)
        got["tty_input_seen"] = injected
    assert r.status == "ok", (r.status, r.reason, r.stderr)
    return r, got


@pytest.fixture
def host_listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def test_strict_probe_sees_a_closed_world(host_listener):
    r, p = probe("strict", env={"PROBE_PORT": str(host_listener)})
    assert p["pid"] == 2                        # under the sandbox's init
    assert p["hostname"] == "sandbox"
    assert set(p["caps"].values()) == {"0000000000000000"}
    assert p["no_new_privs"] == "1" and p["seccomp"] == "2"
    # a session of the sandbox's own (its init's, whose pid is 1 here; a session led
    # outside the PID namespace would read 0), a process group of the program's own
    # (a shell's job control: a terminal's ^Z or hangup reaches its group), and no
    # controlling terminal
    assert p["session"]["sid"] in (1, p["pid"]) and p["session"]["pgid"] == p["pid"]
    assert p["session"]["tty_nr"] == 0
    assert p["interfaces"] == ["lo"]
    assert p["host_connect"] != 0               # no route out: the host listener is unreachable
    assert p["ptrace"] == errno.EPERM
    assert p["io_uring_setup"] == errno.EPERM
    assert p["keyctl"] == errno.EPERM
    assert p["vsock"] == errno.EPERM
    assert r.layers[-1].startswith("seccomp") and "landlock:abi7" in r.layers


def test_tiocsti_cannot_push_input_into_the_callers_terminal():
    _, p = probe("strict", stdout_tty=True)
    assert p["tiocsti"] == errno.EPERM
    assert b"x" not in p["tty_input_seen"]


def test_loopback_talks_to_itself_but_not_to_the_host(tmp_path, host_listener):
    pol = tmp_path / "lo.toml"
    pol.write_text('extends = ["strict"]\n[network]\nmode = "loopback"\n')
    _, p = probe(str(pol), env={"PROBE_PORT": str(host_listener)})
    assert p["loopback_echo"] == "ping"
    assert p["host_connect"] != 0
    assert p["interfaces"] == ["lo"]


def test_none_network_has_no_usable_interface(host_listener):
    _, p = probe("strict", env={"PROBE_PORT": str(host_listener)})
    assert p["loopback_echo"].startswith("errno")   # lo is down: not even to itself


def run_bomb(tmp_path, limits: str, code: str):
    """`code` under strict with extra [limits] lines; the launcher must survive it."""
    pol = tmp_path / "bomb.toml"
    pol.write_text(f'extends = ["strict"]\n[limits]\n{limits}\n')
    return Launcher(capture_output=True).spawn([sys.executable, "-I", "-c", code],
                                               policy=str(pol))


def test_fork_bomb_hits_the_process_limit_and_the_launcher_survives(tmp_path):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_bomb(tmp_path, 'processes = 16\nwall = "4s"', bomb)
    assert (r.status, r.reason) == ("limit_exceeded", "processes"), (r.status, r.reason)
    from sandbox.monitor import cgroups
    pids = cgroups.probe().controllers.get("pids")
    if pids is not None and pids.usable:
        assert r.limits_applied["processes"] == f"cgroup-{pids.version}"
    else:  # without a writable pids cgroup the honest mechanism is the rlimit
        assert r.limits_applied["processes"] == "rlimit"
    assert Launcher().spawn(["true"]).status == "ok"


def _cgroup_memory_usable() -> bool:
    from sandbox.monitor import cgroups
    c = cgroups.probe().controllers.get("memory")
    return bool(c and c.usable)


def test_memory_bomb_ends_as_limit_exceeded(tmp_path):
    bomb = "x = []\nwhile True:\n    x.append(bytearray(8 << 20))\n"
    r = run_bomb(tmp_path, 'memory = "128MiB"', bomb)
    if _cgroup_memory_usable():
        assert r.limits_applied["memory"].startswith("cgroup")
        assert (r.status, r.reason) == ("limit_exceeded", "memory"), (r.status, r.reason)
    else:
        # Honest report without a writable memory cgroup: RLIMIT_AS stopped the
        # allocation (the program saw MemoryError and exited 1), and nothing
        # outside the program can tell why it exited; the result says which
        # mechanism applied, and `sandbox doctor` says cgroups are unavailable.
        assert r.limits_applied["memory"] == "rlimit"
        assert (r.status, r.exit_code) == ("error", 1) and "MemoryError" in r.stderr
    assert Launcher().spawn(["true"]).status == "ok"


def test_memory_bomb_in_a_workflow_action(tmp_path):
    # With a memory cgroup the monitor sees the OOM kill: limit_exceeded. Without one,
    # RLIMIT_AS makes the action raise MemoryError, which only the child reports: a
    # status about a limit needs the monitor's evidence (a forged `error` frame must
    # not make one, tests/test_ipc_hostile.py), so the run is an error naming it.
    from sandbox.workflow import Workflow
    pol = tmp_path / "mem.toml"
    pol.write_text('extends = ["strict"]\n[limits]\nmemory = "256MiB"\n')
    wf = Workflow.from_dict({"imports": ["wf_actions"],
                             "stages": [{"actions": ["eat_memory"]}]})
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")
    r = Launcher().spawn(wf, policy=str(pol), code_paths=[here])
    if _cgroup_memory_usable():
        assert (r.status, r.reason) == ("limit_exceeded", "memory"), (r.status, r.reason, r.error)
    else:
        assert r.limits_applied["memory"] == "rlimit"
        assert r.status == "error" and r.reason.startswith("MemoryError"), (r.status, r.reason)
