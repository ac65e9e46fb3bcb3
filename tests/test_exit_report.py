"""The monitor's exit report is bounded and typed: a hostile program cannot
make it overflow (issue 11 finding 5), and the launcher accepts only its shape.

Judged from the host: the RunResult is complete and the run's cgroup is gone.
"""
from __future__ import annotations

import glob
import os

import pytest

from sandbox.policy import load_policy
from sandbox.policy.model import AuditPolicy

# Opens 1500 distinct, not granted paths of ~3,500 characters: >5 MB of denied entries.
FLOOD = r"""
import os
for i in range(1500):
    try:
        os.open("/nonexistent-%d/" % i + "x" * 3500, os.O_RDONLY)
    except OSError:
        pass
print("flooded")
"""


def _cgroups_named(run_id: str) -> list[str]:
    return [p for p in glob.glob("/sys/fs/cgroup/**/*" + run_id, recursive=True)]


def _cgroups_left(run_id: str) -> list[str]:
    """The monitor removes the run's cgroups just after it reported: give it a moment."""
    import time
    for _ in range(100):
        left = _cgroups_named(run_id)
        if not left:
            return []
        time.sleep(0.05)
    return left


@pytest.mark.isolation
@pytest.mark.parametrize("start,spare", [("forkserver", "1"), ("forkserver", "0"),
                                         ("exec", "1")], ids=["spare", "no-spare", "exec"])
def test_huge_denied_list_still_gives_a_complete_result(tmp_path, py, monkeypatch, start,
                                                        spare):
    from sandbox.launcher.launcher import Launcher
    monkeypatch.setenv("SANDBOX_SPARE", spare)
    la = Launcher(capture_output=True, start=start, audit_db=str(tmp_path / "audit.sqlite"))
    pol = load_policy("default").replace(audit=AuditPolicy(files="denied"))
    r = la.spawn([py, "-I", "-c", FLOOD], policy=pol)
    assert r.status == "ok", (r.status, r.reason, r.stderr)
    assert r.exit_code == 0 and r.stdout.strip() == "flooded"
    assert r.audit is not None and r.audit["denied_count"] >= 1500
    assert 0 < len(r.denied) < 1500   # clipped, and the clipping is counted
    assert r.audit["denied_listed"] == len(r.denied) and r.clipped["denied"] > 0
    assert "memory" in r.limits_applied
    assert not _cgroups_left(r.run_id)
    la.close()


# The monitor's own code fails after the sandbox ended (here: a patched _finish).
FAILING_SERVER = r"""
import sys
from sandbox.monitor import supervisor
def _finish(self, t0):
    raise RuntimeError("injected failure")
supervisor.Supervisor._finish = _finish
from sandbox import forkserver
sys.exit(forkserver.main())
"""


@pytest.mark.isolation
def test_a_failing_monitor_still_reports_and_removes_its_cgroup():
    """Before: any exception in the monitor ended it unhandled; the launcher saw
    "the monitor process ended unexpectedly" and the run's cgroup stayed."""
    import sys

    from sandbox.launcher import monitors
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la._forkserver = monitors.ForkServerClient([sys.executable, "-I", "-c", FAILING_SERVER])
    try:
        r = la.spawn(["true"], policy="default")
    finally:
        la._forkserver.close()
    assert r.status == "error", (r.status, r.reason)
    assert r.reason == "the monitor failed: RuntimeError: injected failure", r.reason
    assert not _cgroups_left(r.run_id)


# -- the codec (sandbox.protocol), no sandbox needed ------------------------------------
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sandbox import protocol as P  # noqa: E402
from sandbox.errors import ProtocolError  # noqa: E402

# Long strings cheaply: a short random text repeated, any code point (surrogates too).
big_text = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=8), st.integers(0, 1500))
ints = st.integers(-(1 << 70), 1 << 70)
floats = st.floats(allow_nan=True, allow_infinity=True)
denied = st.builds(P.Denied, seq=ints, pid=ints, operation=big_text, syscall=big_text,
                   path=big_text, rule=big_text)
audit = st.builds(
    P.AuditSummary, files=big_text, checked=ints,
    by_operation=st.dictionaries(big_text, st.builds(P.OpCounts, ints, ints), max_size=40),
    top_paths=st.lists(st.tuples(big_text, ints), max_size=14),
    errors_sample=st.none() | st.lists(big_text, max_size=8),
    guarded=st.lists(big_text, max_size=20), db_error=st.none() | big_text)
reports = st.builds(
    P.ExitReport, status=ints, exec_error=st.none() | big_text,
    setup_error=st.none() | st.builds(P.SetupFailure, big_text, big_text),
    layers=st.lists(big_text, max_size=40),
    skipped=st.dictionaries(big_text, big_text, max_size=40),
    violation=st.none() | st.builds(P.Violation, big_text, big_text, ints,
                                    st.lists(ints, max_size=9), ints),
    wall_time=floats, cpu_time=floats,
    timings=st.dictionaries(big_text, floats, max_size=80),
    audit=st.none() | audit, denied=st.lists(denied, max_size=1200))


def test_the_worst_case_report_fits_its_frame():
    assert P.max_size(P.ExitReport) + 64 <= P.EXIT_REPORT_MAX


@settings(derandomize=True, max_examples=60, deadline=None)
@given(reports)
def test_any_report_encodes_within_its_bound_and_decodes_exactly(rep):
    data = P.encode(rep)
    assert len(data) <= P.max_size(P.ExitReport)
    back = P.decode(P.ExitReport, data)
    assert P.encode(back) == data          # the clipped form is a fixed point
    assert back.status == max(P.INT_MIN, min(P.INT_MAX, rep.status))
    assert len(back.denied) + back.clipped.get("denied", 0) == len(rep.denied)
    for x in (back.wall_time, back.cpu_time, *back.timings.values()):
        assert math.isfinite(x)


def test_a_clipped_string_is_counted():
    rep = P.ExitReport(exec_error="x" * 5000)
    back = P.decode(P.ExitReport, P.encode(rep))
    assert back.exec_error == "x" * 4096 and back.clipped == {"exec_error": 904}


def _wire(**change):
    obj = P.to_obj(P.ExitReport(audit=P.AuditSummary(), denied=[P.Denied(path="/a")]))
    obj.update(change)
    return obj


@pytest.mark.parametrize("change", [
    {"extra": 1},                               # unknown field
    {"status": "0"}, {"status": True}, {"status": 1 << 64},
    {"timed_out": 1}, {"cpu_time": float("inf")}, {"cpu_time": "1"},
    {"exec_error": "x" * 4097}, {"layers": ["l"] * 33}, {"layers": "abc"},
    {"denied": [{"seq": 1}]},                  # missing fields
    {"denied": [{**dataclasses.asdict(P.Denied()), "path": 3}]},
    {"audit": {"files": "all"}}, {"audit": []}, {"pids": {"monitor": 1.5}},
    {"violation": {"kind": "seccomp"}},
], ids=lambda c: next(iter(c)))
def test_the_launcher_accepts_exactly_the_shape(change):
    P.from_obj(P.ExitReport, _wire())          # the unchanged one is fine
    with pytest.raises(ProtocolError):
        P.from_obj(P.ExitReport, _wire(**change))
    obj = _wire()
    del obj["status"]
    with pytest.raises(ProtocolError):
        P.from_obj(P.ExitReport, obj)


def test_a_malformed_exit_frame_ends_the_run_as_an_honest_error():
    """The launcher's reader: a report off the shape gives an error result, no exception."""
    import socket

    from sandbox.ipc.frames import encode
    from sandbox.launcher.assemble import assemble
    from sandbox.launcher.result import RunResult
    from sandbox.launcher.session import Budget, Session
    from sandbox.policy import load_policy

    for payload in ({"status": 0, "surprise": True}, [1, 2], "exit", None):
        a, b = socket.socketpair()
        ipc_a, ipc_b = socket.socketpair()
        s = Session(run_id="r", proc=None, ipc=ipc_a, ctl=a, store={}, budget=Budget(),
                    handler_sets=[], wall=None)
        b.sendall(encode("exit", payload))
        assert s._read_ctl() is False
        res = assemble(RunResult(run_id="r"), s.state, load_policy("default"), "exec")
        assert res.status == "error" and "malformed" in res.reason, res.reason
        for x in (a, b, ipc_a, ipc_b):
            x.close()
    assert json.loads(res.to_json())["status"] == "error"
