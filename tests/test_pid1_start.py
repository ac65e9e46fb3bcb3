"""What the monitor host hands a waiting PID 1: its `Pid1Start` (runspec.pid1_start).

A pooled stub is forked before its run is known, so the run's context cannot
cross the fork; the host builds it from the spec it decoded, with the mount
table of its plan, and PID 1 takes it back with the C unpickler (no JSON decoding
and no policy constructors in a fresh fork of the template). What must hold: the
context and table that arrive are the ones the host built (same steps, same real
paths, so masks and read-only binds are all there), with the run's own
descriptors; a start that is not one fails the run; a plan that resolves
elsewhere than when it was made gets no table (PID 1 then refuses it itself:
test_path_swaps); a start over one datagram arrives whole through a memfd.
"""
from __future__ import annotations

import errno
import os
import pickle
import socket

import pytest
from hypothesis import given, settings, strategies as st

from layer_harness import run_layers
from sandbox import protocol
from sandbox.errors import ProtocolError
from sandbox.isolation import mount_plan
from sandbox.isolation.mount_steps import Prepared, Step
from sandbox.monitor import runspec, stubs
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule
from sandbox.protocol import Pid1Start, Spec
from sandbox.sandboxee import stub


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "public").write_text("public\n")
    (tmp_path / "ro" / "secret").write_text("host secret\n")
    (tmp_path / "link").symlink_to(tmp_path / "ro")
    return tmp_path


def _spec(plan: FsPlan, **kw) -> Spec:
    return Spec(run_id="r", fs_plan=plan.to_dict(), policy=Policy().to_dict(), ipc_fd=9, **kw)


def _through(spec: Spec, ipc: int = 3, exit_fd: int = 7, mon: int = 5):
    """The start as PID 1 takes it: built by the host, through its bytes and back."""
    host = runspec.build_context(spec)
    got = protocol.start_from_bytes(protocol.start_to_bytes(runspec.pid1_start(spec, host)))
    return got, runspec.from_start(got.context, ipc, exit_fd, mon)


def test_the_start_carries_the_table_the_plan_gives_and_the_runs_descriptors(tree):
    plan = FsPlan(rules=(FsRule(str(tree / "link")), FsRule(str(tree / "ro"))),
                  masks=(str(tree / "ro" / "secret"),))
    got, (spec, ctx) = _through(_spec(plan, mode="workflow", env={"A": "1"}))
    want = mount_plan.prepare(plan)
    assert got.mode == "workflow" and not got.in_memfd
    assert ctx.mount_table is not None and ctx.mount_table.plan is ctx.fs_plan
    assert ctx.fs_plan == plan
    assert ctx.mount_table.steps == want.steps and ctx.mount_table.real == want.real
    assert {s.kind for s in ctx.mount_table.steps} >= {"bind", "link", "mask"}
    # the run's descriptors, as they arrived in PID 1, not the host's numbers
    assert (ctx.ipc_fd, ctx.exit_fd, ctx.monitor_fd) == (3, 7, 5)
    assert spec.ipc_fd == 3 and spec.env == {"A": "1", "SANDBOX_IPC_FD": "3"}
    # the policy and plan travel once, parsed, in the context
    assert spec.policy == {} and spec.fs_plan == {}


def test_the_start_carries_what_only_the_host_knows(tree):
    spec = _spec(FsPlan(rules=(FsRule(str(tree / "ro")),)))
    host = runspec.build_context(spec)
    host.cgroup_memory, host.cgroup_view = True, ("memory", "pids")
    host.ipc_fd, host.timings["x"] = 42, 1.0     # the host's own: never PID 1's
    _, ctx = runspec.from_start(runspec.pid1_start(spec, host).context, 3, 4, 5)
    assert ctx.cgroup_memory and ctx.cgroup_view == ("memory", "pids")
    assert ctx.ipc_fd == 3 and ctx.timings == {} and ctx.active == []


def test_no_namespaces_no_table(tree):
    spec = _spec(FsPlan(rules=(FsRule(str(tree / "ro")),)), namespaces=False)
    _, (_, ctx) = _through(spec)
    assert ctx.mount_table is None and not ctx.namespaces


@pytest.mark.isolation
def test_a_view_built_from_the_starts_table_still_masks_and_binds_read_only(tree, monkeypatch):
    ro = str(tree / "ro")
    plan = FsPlan(rules=(FsRule(ro),), masks=(os.path.join(ro, "secret"),))
    _, (_, ctx) = _through(_spec(plan))

    def no_table(plan, *args):
        raise OSError(errno.EIO, "table computed in the sandboxee", "plan")
    monkeypatch.setattr(mount_plan, "mount_table", no_table)   # the forked sandboxee inherits it

    def fn():
        out = {}
        for name in ("public", "secret"):
            try:
                out[name] = open(os.path.join(ro, name)).read()
            except OSError as exc:
                out[name] = errno.errorcode[exc.errno or 0]
        try:
            open(os.path.join(ro, "new"), "w").close()
            out["write"] = "ok"
        except OSError as exc:
            out["write"] = errno.errorcode[exc.errno or 0]
        return out
    r = run_layers(Policy(), fn, base=str(tree / "run"), until="privileges",
                   fs_plan=ctx.fs_plan, mount_table=ctx.mount_table)
    assert r["ok"], r.get("traceback") or r["error"]
    assert r["value"]["public"] == "public\n"
    assert r["value"]["secret"] != "host secret\n", r["value"]
    assert r["value"]["write"] == "EROFS", r["value"]


def test_a_step_of_a_kind_the_mount_layer_does_not_know_is_refused():
    spec = _spec(FsPlan())
    ctx = runspec.build_context(spec)
    ctx.mount_table = Prepared(ctx.fs_plan, [Step(kind="chmod", path="/etc")], {})
    blob = pickle.dumps((spec, ctx))
    with pytest.raises(ProtocolError, match="unknown kind"):
        runspec.from_start(blob, 3, 4, 5)


@pytest.mark.parametrize("blob", [b"", b"not a pickle", pickle.dumps(("a", "b")),
                                  pickle.dumps(Spec()), pickle.dumps((Spec(), Spec()))])
def test_a_context_that_is_not_a_spec_and_its_context_is_refused(blob):
    with pytest.raises(ProtocolError):
        runspec.from_start(blob, 3, 4, 5)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=64))
def test_bytes_that_are_not_a_start_are_refused_cleanly(data):
    """Whatever arrives on the go socket: a start, or ProtocolError; nothing else."""
    try:
        got = protocol.start_from_bytes(data)
    except ProtocolError:
        return
    assert isinstance(got, Pid1Start)


def test_a_start_round_trips_and_a_forged_tag_is_refused():
    start = Pid1Start(mode="exec", in_memfd=False, context=b"x" * 10)
    assert protocol.start_from_bytes(protocol.start_to_bytes(start)) == start
    import marshal
    with pytest.raises(ProtocolError):
        protocol.start_from_bytes(marshal.dumps(("other", "exec", False, b"")))
    with pytest.raises(ProtocolError):
        protocol.start_from_bytes(marshal.dumps(("pid1-start", "exec", 1, b"")))


def test_no_table_is_sent_for_a_plan_that_resolves_elsewhere_now(tree):
    """The launcher planned `data`; it was swapped for a link since. The host sends no
    table, so PID 1 computes it and fails the mount layer (ELOOP), as before."""
    (tree / "data").mkdir()
    plan = FsPlan(rules=(FsRule(str(tree / "data"), real=str(tree / "data")),))
    _, (_, ctx) = _through(_spec(plan))
    assert ctx.mount_table is not None and ctx.mount_table.steps
    os.rename(tree / "data", tree / "data.orig")
    os.symlink(tree / "ro", tree / "data")
    _, (_, ctx) = _through(_spec(plan))
    assert ctx.mount_table is None


class _Pre:
    def __init__(self, go: socket.socket) -> None:
        self.go = go


def test_a_start_over_one_datagram_arrives_whole_through_a_memfd(tree):
    """An environment of ~300 KiB: the start goes as a sealed memfd beside a short
    datagram, and PID 1's side reads the same context back, with the run's five
    descriptors after it."""
    env = {f"V{i}": f"{i:04}" + "x" * 1000 for i in range(300)}
    spec = _spec(FsPlan(rules=(FsRule(str(tree / "ro")),)), env=env)
    start = runspec.pid1_start(spec, runspec.build_context(spec))
    assert len(start.context) > protocol.DATAGRAM_MAX
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pipes = [os.pipe() for _ in range(3)]
    fds = [p[0] for p in pipes]
    try:
        stubs.go(_Pre(ours), start, fds[0], fds[1], [fds[2], fds[2], fds[2]])  # type: ignore[arg-type]
        data, got_fds, flags, _ = socket.recv_fds(theirs, protocol.DATAGRAM_MAX + 1,
                                                  protocol.MAX_FDS)
        assert not flags & protocol.TRUNCATED
        got = protocol.start_from_bytes(data)
        assert got.in_memfd and got.context == b"" and len(got_fds) == 6
        seen = stub._decoded(got, got_fds, lambda ctx, rest: (ctx, rest))
        assert seen[0] == start.context and len(seen[1]) == 5
        back, ctx = runspec.from_start(seen[0], seen[1][0], seen[1][4], 5)
        assert back.env["V299"] == "0299" + "x" * 1000 and ctx.fs_plan == runspec.build_context(spec).fs_plan
        for fd in seen[1]:
            os.close(fd)
    finally:
        theirs.close()
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_the_host_hands_its_table_over_and_keeps_none(tree):
    """Issue 14: a live run's context is the host's memory for the run's whole life, and
    its mount table (made when the run took a pooled view) was ~8 KiB of it, kept after
    the start that carried it. The start takes it; a second start (a restub) makes it
    again from the plan."""
    plan = FsPlan(rules=(FsRule(str(tree / "ro")),), masks=(str(tree / "ro" / "secret"),))
    spec = _spec(plan)
    host = runspec.build_context(spec)
    host.mount_table = table = mount_plan.prepare(host.fs_plan)
    first = runspec.from_start(runspec.pid1_start(spec, host).context, 3, 7, 5)[1]
    assert host.mount_table is None
    assert first.mount_table is not None and first.mount_table.steps == table.steps
    again = runspec.from_start(runspec.pid1_start(spec, host).context, 3, 7, 5)[1]
    assert host.mount_table is None
    assert again.mount_table is not None and again.mount_table.steps == table.steps
