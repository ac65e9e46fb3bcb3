"""The mount layer: the view built from the FsPlan, checked from inside a real sandboxee.

Each test runs a function as PID 1 of fresh namespaces (tests/layer_harness.py)
after the mount layer, or after the privileges layer when capabilities inside
the user namespace would otherwise bypass file modes (masks). Works as root
and as an unprivileged user.
"""
from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
import uuid

import pytest

from layer_harness import run_layers
from sandbox.isolation import mount_calls, mount_plan, mounts
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan, FsRule


def view(tmp_path, fn, *rules: FsRule, masks: tuple[str, ...] = (), until: str = "mounts",
         policy: Policy | None = None, mount_table=None) -> object:
    r = run_layers(policy or Policy(), fn, base=str(tmp_path), until=until,
                   fs_plan=FsPlan(rules=tuple(rules), masks=masks), mount_table=mount_table)
    assert r["ok"], r.get("traceback") or r["error"]
    return r["value"]


def err(call) -> int | str:
    """The errno a call fails with, or "ok"."""
    try:
        call()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_text("readable")
    (tmp_path / "rw").mkdir()
    (tmp_path / "secret").write_text("secret")
    (tmp_path / "ro" / "abs-link").symlink_to(tmp_path / "secret")
    (tmp_path / "ro" / "rel-link").symlink_to("../secret")
    return tmp_path


# --- the plan as steps (no namespaces needed) -------------------------------------------

def test_table_orders_parents_first_and_binds_tmp_trees_over_private_tmp(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    plan = FsPlan(rules=(FsRule(str(tmp_path / "a" / "b"), write=True), FsRule(str(tmp_path / "a")),
                         FsRule("/usr", exec=True)))
    steps = mount_plan.mount_table(plan)
    paths = [s.path for s in steps]
    assert paths.index("/tmp") < paths.index(str(tmp_path / "a")) < paths.index(str(tmp_path / "a" / "b"))
    assert {s.kind for s in steps} >= {"tmp", "proc", "dev", "bind"}
    by_path = {s.path: s for s in steps}
    assert by_path["/usr"].attrs & mount_plan.ATTR_NOEXEC == 0
    assert by_path[str(tmp_path / "a")].attrs & mount_plan.ATTR_RDONLY
    assert by_path[str(tmp_path / "a" / "b")].attrs & mount_plan.ATTR_RDONLY == 0


def test_table_skips_redundant_children_and_missing_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    plan = FsPlan(rules=(FsRule(str(tmp_path / "a"), exec=True), FsRule(str(tmp_path / "a" / "b")),
                         FsRule(str(tmp_path / "nope"))))
    binds = [s.path for s in mount_plan.mount_table(plan) if s.kind == "bind"]
    # b is inside a (same host tree) and gains nothing a does not give: no second bind
    assert binds == [str(tmp_path / "a")]


def test_table_recreates_symlinks_and_binds_their_target(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    steps = mount_plan.mount_table(FsPlan(rules=(FsRule(str(tmp_path / "link")),)))
    kinds = {(s.kind, s.path, s.source) for s in steps if s.kind in ("bind", "link")}
    assert kinds == {("bind", str(tmp_path / "real"), str(tmp_path / "real")),
                     ("link", str(tmp_path / "link"), "real")}


def test_exact_special_paths_are_never_host_binds():
    steps = mount_plan.mount_table(FsPlan(rules=(FsRule("/tmp", write=True, exec=True), FsRule("/dev"),
                                             FsRule("/proc"))))
    assert [s.kind for s in steps] == ["dev", "proc", "tmp"]
    assert steps[2].exec


# --- the view, from inside ---------------------------------------------------------------

@pytest.mark.isolation
def test_read_dir_readable_not_writable_write_dir_writable(tree):
    ro, rw = str(tree / "ro"), str(tree / "rw")

    def fn():
        with open(rw + "/new", "w") as f:
            f.write("from inside")
        return {"read": open(ro + "/f").read(),
                "write_ro": err(lambda: open(ro + "/g", "w")),
                "unlink_ro": err(lambda: os.unlink(ro + "/f")),
                "flags_ro": os.statvfs(ro).f_flag, "flags_rw": os.statvfs(rw).f_flag}
    out = view(tree, fn, FsRule(ro), FsRule(rw, write=True))
    assert out["read"] == "readable"
    assert out["write_ro"] == "EROFS" and out["unlink_ro"] == "EROFS"
    assert (tree / "rw" / "new").read_text() == "from inside"   # a tree under host /tmp, bound rw
    assert str(tree).startswith("/tmp/")
    want = os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
    assert out["flags_ro"] & want == want
    assert out["flags_rw"] & os.ST_RDONLY == 0 and out["flags_rw"] & os.ST_NOEXEC


@pytest.mark.isolation
def test_exec_rule_is_not_noexec(tree):
    out = view(tree, lambda: os.statvfs(sys.prefix).f_flag, FsRule(sys.prefix, exec=True))
    assert out & os.ST_NOEXEC == 0 and out & os.ST_RDONLY


@pytest.mark.isolation
def test_ungranted_paths_do_not_exist(tree):
    ro = str(tree / "ro")

    def fn():
        return {"root": sorted(os.listdir("/")),
                "secret": err(lambda: os.stat(str(tree / "secret"))),
                "dotdot": err(lambda: open(ro + "/../secret")),
                "abs_link": err(lambda: open(ro + "/abs-link")),
                "rel_link": err(lambda: open(ro + "/rel-link")),
                "link_text": os.readlink(ro + "/abs-link"),
                "etc": err(lambda: os.stat("/etc/passwd")),
                "sibling": sorted(os.listdir(str(tree)))}
    out = view(tree, fn, FsRule(ro))
    # ro lives under /tmp; /sys holds only the sandbox's own cgroups (sysview.py)
    assert out["root"] == ["dev", "proc", "sys", "tmp"]
    assert out["secret"] == out["dotdot"] == out["abs_link"] == out["rel_link"] == "ENOENT"
    assert out["link_text"] == str(tree / "secret")   # the link is there, its target is not
    assert out["etc"] == "ENOENT"
    assert out["sibling"] == ["ro"]


@pytest.mark.isolation
def test_hard_link_cannot_reach_outside_the_view(tree):
    rw, ro = str(tree / "rw"), str(tree / "ro")

    def fn():
        return {"outside": err(lambda: os.link(str(tree / "secret"), rw + "/stolen")),
                "across": err(lambda: os.link(ro + "/f", rw + "/f2"))}
    out = view(tree, fn, FsRule(ro), FsRule(rw, write=True))
    assert out["outside"] == "ENOENT"
    assert out["across"] == "EXDEV"   # every rule is its own mount
    assert not (tree / "rw" / "stolen").exists()


@pytest.mark.isolation
def test_masks_hide_files_and_dirs(tree):
    (tree / "ro" / "key").write_text("private key")
    (tree / "ro" / "priv").mkdir()
    (tree / "ro" / "priv" / "inner").write_text("inner")

    def fn():
        ro = str(tree / "ro")
        return {"file": err(lambda: open(ro + "/key").read()),
                "dir": err(lambda: os.listdir(ro + "/priv")),
                "inner": err(lambda: open(ro + "/priv/inner")),
                "size": os.stat(ro + "/key").st_size,
                "other": open(ro + "/f").read()}
    # until privileges: capabilities in the user namespace would bypass mode 0
    out = view(tree, fn, FsRule(str(tree / "ro")),
               masks=(str(tree / "ro" / "key"), str(tree / "ro" / "priv")), until="privileges")
    assert out["file"] == out["dir"] == out["inner"] == "EACCES"
    assert out["size"] == 0
    assert out["other"] == "readable"


@pytest.mark.isolation
def test_mask_outside_the_view_is_ignored(tree):
    out = view(tree, lambda: err(lambda: os.stat(str(tree / "secret"))), FsRule(str(tree / "ro")),
               masks=(str(tree / "secret"),))
    assert out == "ENOENT"


@pytest.mark.isolation
def test_tmp_is_private_and_fresh(tree):
    planted = tempfile.NamedTemporaryFile(dir="/tmp", prefix="sbx-planted-")
    inside_name = f"/tmp/sbx-inside-{uuid.uuid4().hex}"

    def fn():
        with open(inside_name, "w") as f:
            f.write("x")
        return {"planted": os.path.exists(planted.name), "tmp": os.listdir("/tmp"),
                "flags": os.statvfs("/tmp").f_flag}
    with planted:
        out = view(tree, fn)
    assert out["planted"] is False
    assert sorted(out["tmp"]) == sorted([os.path.basename(inside_name), "home"])  # + the private HOME
    assert not os.path.exists(inside_name)
    assert out["flags"] & os.ST_NOEXEC and not out["flags"] & os.ST_RDONLY


@pytest.mark.isolation
def test_proc_is_fresh_and_read_only(tree):
    def fn():
        return {"self": os.readlink("/proc/self"), "pids": sorted(p for p in os.listdir("/proc")
                                                                  if p.isdigit()),
                "write": err(lambda: open("/proc/self/comm", "w"))}
    out = view(tree, fn)
    assert out["self"] == "1"
    assert out["pids"] == ["1"]
    assert out["write"] == "EROFS"


@pytest.mark.isolation
def test_dev_is_minimal(tree):
    def fn():
        with open("/dev/null", "w") as f:
            f.write("discarded")
        with open("/dev/shm/seg", "w") as f:
            f.write("shm")
        return {"dev": sorted(os.listdir("/dev")),
                "zero": open("/dev/zero", "rb").read(4).hex(),
                "urandom": len(open("/dev/urandom", "rb").read(8)),
                "fd": os.readlink("/dev/fd"),
                "create": err(lambda: open("/dev/evil", "w")),
                "null_is_chr": stat.S_ISCHR(os.stat("/dev/null").st_mode),
                "mkdir_root": err(lambda: os.mkdir("/evil"))}
    out = view(tree, fn)
    assert out["dev"] == sorted(["fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr",
                                 "stdin", "stdout", "tty", "urandom", "zero"])
    assert out["zero"] == "00000000" and out["urandom"] == 8
    assert out["fd"] == "/proc/self/fd"
    assert out["create"] == "EROFS" and out["mkdir_root"] == "EROFS"
    assert out["null_is_chr"]


@pytest.mark.isolation
def test_workdir_is_cwd_when_in_view(tree):
    work = str(tree / "work")   # the harness makes it
    assert view(tree, os.getcwd, FsRule(work)) == work
    assert view(tree, os.getcwd) == "/"


@pytest.mark.isolation
def test_symlinked_rule_works_under_both_names(tree):
    (tree / "real").mkdir()
    (tree / "real" / "x").write_text("via link")
    (tree / "alias").symlink_to("real")

    def fn():
        return {"text": os.readlink(str(tree / "alias")),
                "x": open(str(tree / "alias" / "x")).read()}
    out = view(tree, fn, FsRule(str(tree / "alias")))
    assert out == {"text": "real", "x": "via link"}


@pytest.mark.isolation
def test_read_only_reaches_submounts(tree):
    """/sys has submounts (cgroup): a read rule makes all of them read-only."""
    subs = [line.split()[4] for line in open("/proc/self/mountinfo")
            if line.split()[4].startswith("/sys/")]
    assert subs, "this test needs a host /sys with submounts"
    out = view(tree, lambda: os.statvfs(subs[0]).f_flag, FsRule("/sys"))
    assert out & os.ST_RDONLY


@pytest.mark.isolation
def test_remount_fallback_keeps_locked_flags(tree, monkeypatch):
    """Without mount_setattr: MS_REMOUNT|MS_BIND must OR in the source's flags (EPERM otherwise)."""
    monkeypatch.setattr(mount_calls, "_have_setattr", False)   # inherited by the forked sandboxee
    ro = str(tree / "ro")

    sub = next(line.split()[4] for line in open("/proc/self/mountinfo")
               if line.split()[4].startswith("/sys/"))

    def fn():
        return {"write": err(lambda: open(ro + "/g", "w")), "flags": os.statvfs(ro).f_flag,
                "dev_null": err(lambda: open("/dev/null", "w").write("x")),
                "dev_create": err(lambda: open("/dev/evil", "w")),
                "sub_ro": os.statvfs(sub).f_flag & os.ST_RDONLY}
    out = view(tree, fn, FsRule(ro), FsRule("/sys"), masks=(ro + "/f",))
    assert out["write"] == "EROFS" and out["flags"] & os.ST_NOEXEC
    assert out["dev_null"] == "ok" and out["dev_create"] == "EROFS"
    assert out["sub_ro"] == os.ST_RDONLY   # submounts too, via /proc/self/mountinfo


@pytest.mark.isolation
def test_failure_is_a_setup_error_naming_path_and_errno(tmp_path):
    (tmp_path / "view").write_text("not a directory")
    r = run_layers(Policy(), lambda: None, base=str(tmp_path), until="mounts")
    assert not r["ok"]
    assert r["error"].startswith("SetupError: mounts:")
    assert str(tmp_path / "view") in r["error"] and "EEXIST" in r["error"]


@pytest.mark.isolation
def test_rule_beneath_dev_is_bound_and_dev_stays_read_only(tree):
    assert os.path.exists("/dev/ptmx")

    def fn():
        return {"chr": stat.S_ISCHR(os.stat("/dev/ptmx").st_mode),
                "create": err(lambda: open("/dev/evil", "w")),
                "shm": err(lambda: open("/dev/shm/x", "w").close())}
    assert view(tree, fn, FsRule("/dev/ptmx")) == {"chr": True, "create": "EROFS", "shm": "ok"}


@pytest.mark.isolation
def test_prepared_table_is_used_only_for_its_plan(tree, monkeypatch):
    ro = str(tree / "ro")
    prepared = mount_plan.prepare(FsPlan(rules=(FsRule(ro),)))

    def no_table(plan, *args):
        raise OSError(errno.EIO, "table computed in the sandboxee", "plan")
    monkeypatch.setattr(mount_plan, "mount_table", no_table)   # the forked sandboxee inherits it
    assert view(tree, lambda: sorted(os.listdir(ro)), FsRule(ro),
                mount_table=prepared) == sorted(os.listdir(ro))
    r = run_layers(Policy(), lambda: None, base=str(tree), until="mounts",
                   fs_plan=FsPlan(rules=(FsRule(str(tree / "rw")),)), mount_table=prepared)
    assert not r["ok"] and "resolving plan" in r["error"] and "EIO" in r["error"]


@pytest.mark.isolation
def test_granting_the_rundir_does_not_expose_the_view_under_construction(tree):
    def fn():
        return {"view": os.listdir(str(tree / "view")), "ro": open(str(tree / "ro" / "f")).read()}
    out = view(tree, fn, FsRule(str(tree)))
    # the scratch tmpfs beside the view (the root, the mask file, the /etc copies) was
    # copied in by the rundir's bind and cut off: only its empty mountpoint is seen
    assert out == {"view": [], "ro": "readable"}
