"""The notification loop's hot path: answer first, record after, end when the sandbox does.

The loop answers each notified call before it records it (the caller waits
only for the verdict), so these check that nothing is lost by that order: the
last calls a program makes right before it exits are in the store, counted
once each. The loop also ends by itself once every task of the sandbox is
gone (since 6.6 RECV then fails at once with ENOENT: a loop that took that
for "one caller died" spun until told to stop). And the store's cap sweep,
which stats every run file, runs at most once per SWEEP_SECONDS per store.
"""
from __future__ import annotations

import os
import socket
import time

import pytest

import sandbox.audit
from sandbox.audit import retention, store
from sandbox.isolation import seccomp
from sandbox.monitor import seccomp_notify as sn
from sandbox.policy import load_policy
from sandbox.policy.model import SyscallPolicy

pytestmark = pytest.mark.isolation


def _child_with_listener(n_opens: int) -> tuple[int, sn.Listener, socket.socket]:
    ours, theirs = socket.socketpair()
    prog = seccomp.compile_program(SyscallPolicy(), notify={"openat"})
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            ours.close()
            import prctl
            prctl.set_no_new_privs(1)
            fd = seccomp.install(prog, listener=True)
            socket.send_fds(theirs, [b"L"], [fd])
            os.close(fd)
            theirs.recv(1)
            for _ in range(n_opens):
                os.close(os.open("/etc/hostname", os.O_RDONLY))
        except BaseException:
            code = 70
        os._exit(code)
    theirs.close()
    _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    return pid, sn.Listener(fds[0]), ours


def test_a_listener_without_tasks_is_orphaned_and_recv_does_not_block():
    pid, listener, sock = _child_with_listener(3)
    try:
        assert not listener.orphaned()          # the child still holds the filter
        sock.sendall(b"g")
        for _ in range(3):
            n = listener.recv()
            assert n is not None and n.name == "openat"
            assert not listener.orphaned()      # its caller waits for the answer
            assert listener.respond_continue(n.id)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        t0 = time.monotonic()
        assert listener.recv() is None          # at once (ENOENT), not blocking
        assert time.monotonic() - t0 < 5
        assert listener.orphaned()
    finally:
        listener.close()
        sock.close()


EXIT_RIGHT_AFTER = r"""
import os, sys
n, path = int(sys.argv[1]), sys.argv[2]
for _ in range(n):
    os.close(os.open(path, os.O_RDONLY))
os._exit(0)
"""


@pytest.mark.parametrize("n", [1, 500])
def test_the_calls_right_before_exit_are_all_recorded(tmp_path, py, n):
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    marker = "/etc/hostname"
    for _ in range(3):
        r = la.spawn([py, "-I", "-S", "-c", EXIT_RIGHT_AFTER, str(n), marker],
                     policy=load_policy("strict"), output_dir=str(tmp_path / "out"))
        assert r.status == "ok", (r.reason, r.stderr)
        recs = [x for x in sandbox.audit.records(r.run_id, db=la.audit_db)
                if x["path"] == marker and x["syscall"] == "openat"]
        assert sum(x["count"] for x in recs) == n, recs
        a = r.audit
        assert a["dropped"] == 0 and a["vanished"] == 0 and a["errors"] == 0, a
        assert a["records"] == a["stored_events"] + a["not_stored"] + a["dropped"], a


def test_the_cap_sweep_is_due_once_per_period(tmp_path):
    d = str(tmp_path)
    assert retention.sweep_due(d, every=60)
    assert not retention.sweep_due(d, every=60)            # swept a moment ago
    stamp = os.path.join(d, retention.SWEPT)
    os.utime(stamp, (time.time() - 120, time.time() - 120))
    assert retention.sweep_due(d, every=60)                # long enough ago
    os.utime(stamp, (time.time() + 3600, time.time() + 3600))
    assert retention.sweep_due(d, every=60)                # a stamp in the future stops nothing
    os.unlink(stamp)
    target = tmp_path / "elsewhere"
    target.write_text("")
    os.utime(target, (1000, 1000))
    os.symlink(target, stamp)
    os.utime(stamp, (time.time() - 120, time.time() - 120), follow_symlinks=False)
    assert retention.sweep_due(d, every=60)
    assert target.stat().st_mtime == 1000                # the stamp is never followed


def test_the_sweep_period_grows_with_what_the_last_sweep_cost(tmp_path):
    """A sweep of a big store takes hundreds of ms of the monitor host's CPU: its period
    is at least SWEEP_SHARE times that, at most SWEEP_MAX whatever the stamp says."""
    d = str(tmp_path)
    assert retention.sweep(d, 1 << 40) == 0                 # due: swept, nothing over the cap
    stamp = os.path.join(d, retention.SWEPT)
    took = float(open(stamp).read())                    # the CPU it took, for the next period
    assert 0 <= took < 60
    assert retention.sweep(d, 1 << 40) is None              # not due again at once

    def due_after(text: str, ago: float) -> bool:
        with open(stamp, "w") as f:
            f.write(text)
        os.utime(stamp, (time.time() - ago, time.time() - ago))
        return retention.sweep_due(d, every=10)
    assert not due_after("2.0", 120)                    # 2 s of CPU: every 200 s
    assert due_after("2.0", 250)
    assert not due_after("0.001", 5) and due_after("0.001", 11)   # never below `every`
    assert due_after("1e9", retention.SWEEP_MAX + 5)        # never beyond SWEEP_MAX
    for junk in ("nan", "-5", "inf-ish", "\xff", ""):
        assert due_after(junk, 11), junk                # anything else: the default period
