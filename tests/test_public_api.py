"""The public Python API: typed exports (mypy), Launcher as a context manager
owning its fork server, start() handles, Status as a StrEnum."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import sandbox
from sandbox import Launcher, RunHandle, Status

from conftest import processes_with

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait_for(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_all_is_literal_and_matches_the_lazy_exports():
    assert sorted(sandbox.__all__) == sorted(sandbox._EXPORTS)
    for name in sandbox.__all__:
        assert getattr(sandbox, name) is not None


def test_mypy_strict_accepts_a_typed_user_of_the_public_api():
    """`from sandbox import Launcher` must be a class to type checkers, not `object`."""
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                        "--no-incremental", "--cache-dir=/dev/null",
                        os.path.join(ROOT, "tests", "typing", "api_client.py")],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_public_launcher_modules_pass_mypy():
    files = ["sandbox/__init__.py", "sandbox/launcher/launcher.py", "sandbox/launcher/handle.py",
             "sandbox/launcher/result.py", "sandbox/parallel.py", "sandbox/errors.py"]
    p = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent",
                        "--no-incremental", "--cache-dir=/dev/null", *files],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_status_is_a_str_enum_with_cancelled():
    assert Status.CANCELLED == "cancelled" and isinstance(Status.OK, str)
    r = sandbox.RunResult(run_id="x", status="ok")
    assert r.status is Status.OK and r.ok
    assert json.loads(r.to_json())["status"] == "ok"


@pytest.mark.isolation
def test_context_manager_stops_its_fork_server_and_refuses_later_runs():
    with Launcher(capture_output=True) as launcher:
        r = launcher.spawn(["/bin/echo", "hi"])
        server = launcher.forkserver_pid
        assert (r.status, r.stdout) == (Status.OK, "hi\n")
        assert server is not None and _alive(server)
        assert r.pids["monitor"] == server   # the monitor host
    assert launcher.closed and launcher.forkserver_pid is None
    assert _wait_for(lambda: not _alive(server))
    with pytest.raises(RuntimeError, match="closed"):
        launcher.spawn(["true"])
    with pytest.raises(RuntimeError, match="closed"):
        launcher.start(["true"])


@pytest.mark.isolation
def test_two_launchers_have_their_own_fork_servers():
    with Launcher() as a, Launcher() as b:
        assert a.spawn(["true"]).ok and b.spawn(["true"]).ok
        assert a.forkserver_pid != b.forkserver_pid


@pytest.mark.isolation
def test_start_handle_wait_cancel_result():
    marker = f"handle-{os.getpid()}-{time.monotonic_ns()}"
    with Launcher() as launcher:
        h = launcher.start(["sh", "-c", f"sleep 60; echo {marker}"])
        assert isinstance(h, RunHandle) and len(h.run_id) == 32
        assert _wait_for(lambda: h.pid is not None and processes_with(marker))
        assert _alive(h.pid)
        with pytest.raises(TimeoutError):
            h.wait(0.05)
        assert h.result() is None and not h.done()
        h.cancel()
        r = h.wait(60)
        assert r.status is Status.CANCELLED and r.run_id == h.run_id
        assert h.result() is r and h.done()
        assert r.pids.get("monitor") == h.pid
    assert _wait_for(lambda: processes_with(marker) == [])


@pytest.mark.isolation
def test_spawn_is_start_wait():
    with Launcher(capture_output=True) as launcher:
        a = launcher.spawn(["sh", "-c", "echo x; exit 3"])
        b = launcher.start(["sh", "-c", "echo x; exit 3"]).wait(60)
    strip = lambda r: (r.status, r.exit_code, r.stdout, r.policy)   # noqa: E731
    assert strip(a) == strip(b) == (Status.ERROR, 3, "x\n", "default")


@pytest.mark.isolation
def test_a_queued_run_cancelled_never_starts(tmp_path):
    out = tmp_path / "o"
    with Launcher(max_concurrent=1) as launcher:
        first = launcher.start(["sleep", "60"])
        second = launcher.start(["sh", "-c", "echo ran > $SANDBOX_OUTPUT/ran"],
                                output_dir=str(out))
        assert _wait_for(lambda: first.pid is not None)
        second.cancel()
        first.cancel()
        r2 = second.wait(60)
        assert first.wait(60).status is Status.CANCELLED
    assert r2.status is Status.CANCELLED and r2.reason == "cancelled before it started"
    assert second.pid is None and not (out / "ran").exists()


@pytest.mark.isolation
def test_close_cancels_runs_still_going():
    launcher = Launcher()
    h = launcher.start(["sleep", "60"])
    assert _wait_for(lambda: h.pid is not None)
    launcher.close()
    assert h.done() and h.wait().status is Status.CANCELLED
    assert not _alive(h.pid)


def test_start_reports_input_errors_from_wait():
    with Launcher() as launcher:
        h = launcher.start(["true"], policy="no_such_policy_anywhere")
        with pytest.raises(sandbox.PolicyError):
            h.wait(60)


def test_audit_db_is_a_constructor_argument(tmp_path):
    path = str(tmp_path / "a.sqlite")
    with Launcher(audit_db=path) as launcher:
        assert launcher.audit_db == path


def test_timeout_nan_is_an_input_error():
    with Launcher() as launcher:
        for bad in (float("nan"), float("inf"), -1.0, 1e12):
            with pytest.raises(sandbox.InputError):
                launcher.spawn(["true"], timeout=bad)


def test_a_handle_holds_one_outcome_and_wakes_its_waiters():
    """RunHandle without a run: a waiter in another thread gets the outcome set later;
    an exception comes out of `wait` and `result` alike; a second outcome is refused
    (a launcher bug, never a silent overwrite)."""
    import threading
    from sandbox.launcher.result import RunResult
    h, got = RunHandle("r" * 32), []
    waiter = threading.Thread(target=lambda: got.append(h.wait(30)))
    waiter.start()
    assert h.result() is None and not h.done()
    r = RunResult(run_id=h.run_id, status=Status.OK)
    h._finish(r)
    waiter.join(30)
    assert got == [r] and h.result() is r and h.done()
    with pytest.raises(RuntimeError, match="finished twice"):
        h._finish(r)
    bad = RunHandle("b" * 32)
    bad._finish(None, sandbox.PolicyError("no such policy"))
    for call in (lambda: bad.wait(0), bad.result):
        with pytest.raises(sandbox.PolicyError):
            call()
