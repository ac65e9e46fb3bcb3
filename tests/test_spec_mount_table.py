"""The mount table computed by the monitor host and carried to PID 1 in the run's Spec.

A pooled stub is forked before its run is known, so the table cannot cross the
fork as it once did; the host computes it (runspec.mount_table_wire) and PID 1
performs it. What must hold: the table that arrives is the one the plan gives
(same steps, same real paths, so masks and read-only binds are all there), a
table of the wrong shape fails the run, and a plan that resolves elsewhere than
when it was made gets no table (PID 1 then refuses it itself: test_path_swaps).
"""
from __future__ import annotations

import errno
import os

import pytest

from layer_harness import run_layers
from sandbox.errors import ProtocolError
from sandbox.isolation import mounts
from sandbox.monitor import runspec
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule
from sandbox.protocol import (MOUNT_STEPS_MAX, MountStep, MountTable, Spec, from_datagram,
                              from_obj, to_datagram, to_obj)


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "public").write_text("public\n")
    (tmp_path / "ro" / "secret").write_text("host secret\n")
    (tmp_path / "link").symlink_to(tmp_path / "ro")
    return tmp_path


def _over_the_wire(plan: FsPlan):
    """The table as the stub gets it: through the Spec's encoding and back."""
    spec = from_datagram(to_datagram(Spec(fs_plan=plan.to_dict(),
                                          mount_table=runspec.mount_table_wire(plan))), Spec)
    got = FsPlan.from_dict(spec.fs_plan)
    return got, runspec.mount_table_from_wire(got, spec.mount_table)


def test_the_table_in_the_spec_is_the_one_the_plan_gives(tree):
    plan = FsPlan(rules=(FsRule(str(tree / "link")), FsRule(str(tree / "ro"))),
                  masks=(str(tree / "ro" / "secret"),))
    got, table = _over_the_wire(plan)
    want = mounts.prepare(plan)
    assert table is not None and table.plan is got
    assert table.steps == want.steps and table.real == want.real
    assert {s.kind for s in table.steps} >= {"bind", "link", "mask"}


@pytest.mark.isolation
def test_a_view_built_from_the_spec_table_still_masks_and_binds_read_only(tree, monkeypatch):
    ro = str(tree / "ro")
    plan = FsPlan(rules=(FsRule(ro),), masks=(os.path.join(ro, "secret"),))
    got, table = _over_the_wire(plan)

    def no_table(plan, *args):
        raise OSError(errno.EIO, "table computed in the sandboxee", "plan")
    monkeypatch.setattr(mounts, "mount_table", no_table)   # the forked sandboxee inherits it

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
    r = run_layers(Policy(), fn, base=str(tree / "run"), until="privileges", fs_plan=got,
                   mount_table=table)
    assert r["ok"], r.get("traceback") or r["error"]
    assert r["value"]["public"] == "public\n"
    assert r["value"]["secret"] != "host secret\n", r["value"]
    assert r["value"]["write"] == "EROFS", r["value"]


@pytest.mark.parametrize("wire", [
    "bind /",
    {"steps": "bind /", "real": []},
    {"steps": [{"kind": "bind", "path": "/", "source": "/", "is_dir": True, "attrs": "8",
                "exec": False}], "real": []},
    {"steps": [{"kind": "bind", "path": "/", "source": "/", "is_dir": True, "attrs": 8}],
     "real": []},
    {"steps": [], "real": [["/a", 1]]},
    {"steps": [], "real": {"/a": "/a"}},
    {"steps": []},
    {"steps": [{"kind": "bind", "path": "/" * 4097, "source": "/", "is_dir": True,
                "attrs": 8, "exec": False}], "real": []},
])
def test_a_table_of_the_wrong_shape_is_refused(wire):
    """The table is a protocol dataclass (sandbox.protocol.MountTable): the Spec's own
    decoding refuses anything not exactly its shape, within its bounds."""
    obj = to_obj(Spec(fs_plan=FsPlan().to_dict()))
    obj["mount_table"] = wire
    with pytest.raises(ProtocolError):
        from_obj(Spec, obj)


def test_a_step_of_a_kind_the_mount_layer_does_not_know_is_refused():
    table = MountTable(steps=[MountStep(kind="chmod", path="/etc")])
    spec = from_datagram(to_datagram(Spec(mount_table=table)), Spec)
    with pytest.raises(ProtocolError, match="unknown kind"):
        runspec.mount_table_from_wire(FsPlan(), spec.mount_table)


def test_a_table_over_the_bounds_is_not_sent_and_pid1_computes_it(tree):
    """Never cut short (a table without its masks would be a wider view): a plan whose
    table does not fit the spec's bounds gets none, and the spec still encodes."""
    for i in range(MOUNT_STEPS_MAX + 1):
        (tree / "ro" / f"m{i}").write_text("")
    plan = FsPlan(rules=(FsRule(str(tree / "ro")),),
                  masks=tuple(str(tree / "ro" / f"m{i}") for i in range(MOUNT_STEPS_MAX + 1)))
    assert len(mounts.prepare(plan).steps) > MOUNT_STEPS_MAX
    assert runspec.mount_table_wire(plan) is None
    small = FsPlan(rules=(FsRule(str(tree / "ro")),))
    assert runspec.mount_table_wire(small) is not None


def test_no_table_is_sent_for_a_plan_that_resolves_elsewhere_now(tree):
    """The launcher planned `data`; it was swapped for a link since. The host sends no
    table, so PID 1 computes it and fails the mount layer (ELOOP), as before."""
    (tree / "data").mkdir()
    plan = FsPlan(rules=(FsRule(str(tree / "data"), real=str(tree / "data")),))
    table = runspec.mount_table_wire(plan)
    assert table is not None and table.steps
    os.rename(tree / "data", tree / "data.orig")
    os.symlink(tree / "ro", tree / "data")
    assert runspec.mount_table_wire(plan) is None
    assert runspec.mount_table_from_wire(plan, None) is None
