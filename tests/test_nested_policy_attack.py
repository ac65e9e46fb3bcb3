"""A nested spawn can never widen its own policy (issue 10 finding 1), judged from the host.

The hostile action runs under `strict` and asks, through ctx.spawn, for a
policy that names a host directory outside its grants; a temp directory
stands in for /etc/cron.d. Whatever spelling it uses (``..`` after a
variable, a symlink it planted in its own output, a glob, an `extends` of a
file it chose), no file may appear there.
"""
from __future__ import annotations

import json
import os

import pytest

from sandbox.launcher.launcher import Launcher

pytestmark = pytest.mark.isolation

CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher")


def wf(*actions):
    return {"name": "attack", "imports": ["policy_actions"],
            "stages": [{"id": "s", "actions": list(actions)}]}


def writer(paths):
    return wf({"name": "pol.write", "params": {"paths": list(paths)}})


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A state dir of its own, so `${OUTPUT}/../../..` lands at a known host place."""
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("SANDBOX_HOME", str(state))
    return state


def _strict_dict(write):
    """`strict` as the child sees it (a dict), plus the rules it wants to add."""
    from sandbox.policy import load_policy
    d = load_policy("strict").to_dict()
    d.pop("source", None)
    d["name"] = "evil"
    d["filesystem"]["write"] = [*d["filesystem"]["write"], *write]
    return d


def _host_files(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_dotdot_after_a_variable_cannot_reach_a_host_directory(home):
    cron = home / "cron.d"                  # stands in for /etc/cron.d
    cron.mkdir()
    evil = "${OUTPUT}/../../../cron.d"      # OUTPUT = $SANDBOX_HOME/runs/<id>/output
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.nest", "params": {"child": writer(["$OUTPUT/../../../cron.d/x"]),
                                           "policy": _strict_dict([evil])}}),
        policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    assert _host_files(cron) == [], "the nested run created a file outside its parent's grants"
    child = r.store["child_result"]
    assert child["status"] == "error" and ".." in child["reason"], child


def strict_writing(tree):
    """`strict` plus a host tree the parent run can write while it runs (its own
    ${OUTPUT} is a private tmpfs until the run ends: tests/test_outputs.py)."""
    from dataclasses import replace

    from sandbox.policy import load_policy
    pol = load_policy("strict")
    return pol.replace(name="strict+shared", filesystem=replace(
        pol.filesystem, write=(*pol.filesystem.write, str(tree))))


@pytest.mark.parametrize("base", ["output", "shared tree"])
def test_a_symlink_planted_in_the_parent_output_cannot_be_granted(home, tmp_path, base):
    cron = home / "cron.d"
    cron.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    policy = _strict_dict(["$PARENT_OUTPUT/link"])
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.symlink", "params": {
            "target": str(cron), "link": "link", "policy": policy,
            "base": str(shared) if base == "shared tree" else None,
            "child": writer(["$PARENT_OUTPUT/link/x", str(cron / "y")])}}),
        policy=strict_writing(shared), code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    assert _host_files(cron) == []
    if base == "shared tree":   # a link on the host at check time: refused
        assert r.store["child_result"]["status"] == "error", r.store["child_result"]


def test_a_directory_the_parent_can_still_swap_is_not_granted(home, tmp_path):
    """Between the check and the bind, the parent (other threads of it) could swap a
    directory inside a host tree it can write for a symlink: rules strictly inside
    a tree the running parent can write are refused."""
    shared = tmp_path / "shared"
    shared.mkdir()
    policy = _strict_dict([])
    policy["filesystem"]["read"] = [*policy["filesystem"]["read"], "$PARENT_OUTPUT/data"]
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.symlink", "params": {
            "target": None, "link": "data", "policy": policy, "child": writer([]),
            "base": str(shared)}}),
        policy=strict_writing(shared), code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    child = r.store["child_result"]
    assert child["status"] == "error" and "parent run can write" in child["reason"], child


def test_a_glob_cannot_reach_a_host_directory(home):
    cron = home / "cron.d"
    cron.mkdir()
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.nest", "params": {"child": writer([str(cron / "x")]),
                                           "policy": _strict_dict([str(home) + "/*"])}}),
        policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    assert _host_files(cron) == []
    assert r.store["child_result"]["status"] == "error"


def test_extends_of_a_file_chosen_by_the_child_is_refused(home, tmp_path):
    cron = home / "cron.d"
    cron.mkdir()
    loose = tmp_path / "loose.toml"
    loose.write_text(f'name = "loose"\n[filesystem]\nwrite = ["{cron}"]\n')
    policy = _strict_dict([])
    policy["extends"] = [str(loose)]
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.nest", "params": {"child": writer([str(cron / "x")]),
                                           "policy": policy}}),
        policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    assert _host_files(cron) == []
    assert r.store["child_result"]["status"] == "error"


def test_a_child_cannot_ask_for_a_writable_work_directory(home):
    """filesystem.workdir is a right too: a `strict` parent keeps its work directory
    read-only (direct), so a child asking for copy-on-write gets direct (met with the
    ceiling, like scratch_exec) and writing its work directory fails."""
    policy = _strict_dict(["${OUTPUT}"])
    policy["filesystem"]["workdir"] = "copy-on-write"
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.nest", "params": {"child": writer(["$CWD/planted"]),
                                           "policy": policy}}),
        policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    child = r.store["child_result"]
    assert child["status"] == "ok", child
    assert child["store"]["writes"]["$CWD/planted"] != "written", child


def test_the_child_may_still_write_its_own_output(home):
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.nest", "params": {"child": writer(["$OUTPUT/ok.txt"]),
                                           "policy": _strict_dict(["${OUTPUT}"])}}),
        policy="strict", code_paths=[CODE])
    assert r.status == "ok", (r.reason, r.error)
    child = r.store["child_result"]
    assert child["status"] == "ok", child
    assert child["store"]["writes"] == {"$OUTPUT/ok.txt": "written"}


def test_a_hook_narrowing_to_a_planted_symlink_cannot_widen(home, tmp_path):
    """A before_spawn hook may only tighten; `${OUTPUT}/link` is textually inside
    `${OUTPUT}`, but an earlier run left `link` -> a host directory in the reused
    output dir. Judged on the resolved policy, that is a widening: nothing runs."""
    from dataclasses import replace

    from sandbox.errors import PolicyError
    cron = home / "cron.d"
    cron.mkdir()
    out = tmp_path / "shared"   # a reused host tree the policy can write (not ${OUTPUT},
    out.mkdir()                 # which must be new or empty: tests/test_outputs.py)
    os.symlink(cron, out / "link")
    launcher = Launcher(capture_output=True)

    @launcher.before_spawn
    def narrow(req):
        fs = req.policy.filesystem
        req.policy = req.policy.replace(filesystem=replace(fs, write=(f"{out}/link",)))

    with pytest.raises(PolicyError, match="not narrower"):
        launcher.spawn(["/bin/sh", "-c", f"echo x > {out}/link/x; echo y > {cron}/y"],
                       policy=strict_writing(out))
    assert _host_files(cron) == []


def test_a_glob_matching_a_symlink_does_not_grant_its_target(home, tmp_path):
    """The caller's work directory holds a symlink to a host directory the parent
    cannot see (its view binds the work directory, not what links point to). A
    child's glob over the work directory matches the link, and a bind follows it:
    judged on the real path, that is outside the parent's grants."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "s.txt").write_text("SECRET-CANARY")
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(secret, work / "link")
    policy = _strict_dict([])
    policy["filesystem"]["read"] = [*policy["filesystem"]["read"], f"{work}/*"]
    reader = wf({"name": "pol.read", "params": {"paths": [f"{work}/link/s.txt",
                                                          f"{secret}/s.txt"]}})
    r = Launcher(capture_output=True).spawn(
        wf({"name": "pol.nest", "params": {"child": reader, "policy": policy}}),
        policy="strict", code_paths=[CODE], workdir=str(work))
    assert r.status == "ok", (r.reason, r.error)
    child = r.store["child_result"]
    assert "SECRET-CANARY" not in json.dumps(child), child
    # The plan binds a glob match through a link only where the policy grants its target
    # itself (planner._link_in_match), so the link's target never reaches the child's plan
    # and the comparison has nothing to refuse: the child runs and reads nothing of it.
    assert child["status"] == "ok", child
    assert all(v.startswith("FileNotFoundError") for v in child["store"]["reads"].values()), child
