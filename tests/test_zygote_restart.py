"""A dead zygote is replaced: the monitor host keeps serving its launcher.

The zygote (sandbox.monitor.zygote) forks every stub. If it dies (killed, OOM),
every stub it forked dies with it (PDEATHSIG), and so does every sandbox. Judged
from the host side: the launcher's later runs succeed on a new zygote, which the
multi-threaded host started by fork+exec (its command line says so); a run in flight
on the old zygote ends with a result that says what happened, never hangs; the warm
spare and pools, dead with their zygote, are discarded and made again on the new one.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.monitor.tree import children_map

pytestmark = pytest.mark.isolation

HANG = 120.0   # seconds after which a run that never ends counts as hung


def _zygote(launcher: Launcher) -> int:
    server = launcher.forkserver_pid
    assert server is not None
    kids = children_map().get(server, [])
    alive = [k for k in kids if _state(k) not in ("Z", "X", "")]
    assert len(alive) == 1, kids        # the host's one child is its zygote
    return alive[0]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + HANG
    while _state(pid) not in ("Z", "X", "") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(pid) in ("Z", "X", ""), f"zygote {pid} still alive"


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


def _wait(handle, timeout: float = HANG):
    """handle.wait(), failing (not hanging the suite) if the run never ends."""
    out: list = []
    t = threading.Thread(target=lambda: out.append(handle.wait()), daemon=True)
    t.start()
    t.join(timeout)
    assert out, f"the run did not end within {timeout:.0f} s of its zygote's death"
    return out[0]


def test_a_dead_zygote_is_replaced_and_the_next_run_succeeds():
    with Launcher(capture_output=True) as launcher:
        assert launcher.spawn(["true"]).status == "ok"
        old = _zygote(launcher)
        _kill_and_wait(old)
        for _ in range(3):
            r = launcher.spawn(["echo", "hi"])
            assert (r.status, r.stdout) == ("ok", "hi\n"), (r.status, r.reason)
        new = _zygote(launcher)
        assert new != old
        # started by fork+exec from the threaded host, not forked Python
        assert "sandbox.monitor.zygote" in _cmdline(new), _cmdline(new)
        # and it can die too: replaced again
        _kill_and_wait(new)
        r = launcher.spawn(["echo", "again"])
        assert (r.status, r.stdout) == ("ok", "again\n"), (r.status, r.reason)


def test_a_run_in_flight_when_the_zygote_dies_ends_honestly():
    # an argument no other test on the machine uses: this run's program, nobody else's
    argv = ["sleep", f"60.{os.getpid()}"]
    mine = [a.encode() for a in argv]
    with Launcher(capture_output=True) as launcher:
        h = launcher.start(argv)
        deadline = time.monotonic() + HANG
        while not any(_cmdline_is(p, mine) for p in _all_pids()):
            assert time.monotonic() < deadline, "the sleep never started"
            time.sleep(0.02)
        _kill_and_wait(_zygote(launcher))
        r = _wait(h)
        assert r.status != "ok"
        assert "zygote" in (r.reason or ""), (r.status, r.reason)
        # the sandbox died with its stub (PDEATHSIG; its PID namespace with its PID 1)
        deadline = time.monotonic() + HANG
        while any(_cmdline_is(p, mine) for p in _all_pids()):
            assert time.monotonic() < deadline, "the sandbox outlived its zygote"
            time.sleep(0.02)
        # the host is still serving
        r2 = launcher.spawn(["echo", "after"])
        assert (r2.status, r2.stdout) == ("ok", "after\n"), (r2.status, r2.reason)


def test_the_spare_is_made_again_on_the_new_zygote():
    """The spare died with its zygote: it is discarded (spares are not turned off, as
    for a host that cannot enter namespaces) and made again on the new zygote."""
    with Launcher(capture_output=True) as launcher:
        first = [launcher.spawn(["true"]) for _ in range(3)]
        if not any(r.warm for r in first):
            pytest.skip(f"no warm spare on this machine: {[r.reason for r in first]}")
        _kill_and_wait(_zygote(launcher))
        after = [launcher.spawn(["true"]) for _ in range(4)]
        assert all(r.status == "ok" for r in after), [r.reason for r in after]
        assert any(r.warm for r in after), "no spare after the zygote was replaced"


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def _cmdline_is(pid: int, argv: list[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[:-1] == argv
    except OSError:
        return False


def test_the_zygote_answers_for_a_stub_that_ends_at_once():
    """The host waits for exactly one answer per stub it asks for. The answer is the
    zygote's, sent beside the stub's pidfd right after the fork: a stub that dies at
    once (here: a request it refuses; in life the OOM killer) still leaves the host
    its answer, and the host then sees the stub end before `StubReady`."""
    import select
    import socket as S
    from sandbox import protocol
    from sandbox.monitor.zygote import Zygote
    z = Zygote.spawn(warm=False)
    try:
        pairs = [S.socketpair(S.AF_UNIX, S.SOCK_SEQPACKET) for _ in range(2)]
        try:   # two ends, not three: the stub ends at once
            pid, pidfd = z.fork_stub(protocol.ForkStub(), [b.fileno() for _, b in pairs])
        finally:
            for a, b in pairs:
                a.close()
                b.close()
        assert select.select([pidfd], [], [], 30)[0], "the stub did not end"
        os.close(pidfd)
        assert pid > 0 and z.death() is None      # and the zygote serves on
        pairs = [S.socketpair(S.AF_UNIX, S.SOCK_SEQPACKET) for _ in range(2)]
        try:
            pid2, pidfd2 = z.fork_stub(protocol.ForkStub(), [b.fileno() for _, b in pairs])
            os.close(pidfd2)
        finally:
            for a, b in pairs:
                a.close()
                b.close()
        assert pid2 not in (0, pid)
    finally:
        z.close()


def test_a_stub_asked_of_a_dying_zygote_is_asked_again_of_the_new_one(monkeypatch):
    """The zygote is stopped, a run asks it for a stub (no spare: the run needs one made
    for it), then the zygote is killed without having read the request: the host sees
    the end of its socket, starts a new zygote and asks it again, with fresh sockets."""
    monkeypatch.setenv("SANDBOX_SPARE", "0")
    with Launcher(capture_output=True) as launcher:
        assert launcher.spawn(["true"]).status == "ok"
        old = _zygote(launcher)
        os.kill(old, signal.SIGSTOP)
        try:
            out: list = []
            t = threading.Thread(target=lambda: out.append(launcher.spawn(["echo", "x"])),
                                 daemon=True)
            t.start()
            t.join(1.0)            # the request waits in the stopped zygote's socket
            assert not out, "the run did not need the stopped zygote"
        finally:
            _kill_and_wait(old)
        t.join(HANG)
        assert out, "the run never ended"
        assert (out[0].status, out[0].stdout) == ("ok", "x\n"), (out[0].status, out[0].reason)
        assert _zygote(launcher) != old


def test_the_warm_pools_are_refilled_on_the_new_zygote(tmp_path):
    """A pool's stubs died with their zygote: the pool keeps its place and target, and
    is filled again from the new zygote (runs are served from it again)."""
    policy = tmp_path / "p.toml"
    policy.write_text('extends = ["default"]\n[limits]\nprocesses = 50\n')

    def pooled(launcher: Launcher, runs: int) -> list[bool]:
        seen = []
        for _ in range(runs):
            r = launcher.spawn(["true"], policy=str(policy))
            assert r.status == "ok", r.reason
            if not str(r.limits_applied.get("processes", "")).startswith("cgroup"):
                pytest.skip(f"no pids cgroup for this user: {r.limits_applied}")
            seen.append(r.pooled)
            if r.pooled:
                break
        return seen

    with Launcher(capture_output=True) as launcher:
        before = pooled(launcher, 6)
        assert before[-1], f"no run was served from its pool: {before}"
        _kill_and_wait(_zygote(launcher))
        after = pooled(launcher, 6)
        assert after[-1], f"the pool was not filled again after the zygote died: {after}"
