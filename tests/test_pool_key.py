"""The pool key (sandbox.monitor.pool_key): equal for two runs of one policy, different
for anything that shapes the prestarted state, and never hiding a per-run path.

Plans are built the launcher's way (resolve, build_plan, the run's own directories),
so the key is judged on what a cold start would really build.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import pytest

from sandbox.isolation import mount_plan, prebuilt
from sandbox.isolation.context import RunPaths
from sandbox.monitor import pool_key as K
from sandbox.policy import build_plan, default_variables, resolve
from sandbox.policy.loader import load_policy, load_policy_sourced, parse_policy
from sandbox.policy.plan import FsPlan, FsRule


def _run(policy, base, workdir=None):
    rundir = tempfile.mkdtemp(prefix="sandbox-r-", dir=base)
    wd = workdir or os.path.join(rundir, "work")
    os.makedirs(wd, exist_ok=True)
    out = tempfile.mkdtemp(prefix="out-", dir=base)
    paths = RunPaths(rundir, wd, out, os.path.join(rundir, "tmp"))
    r = resolve(policy, default_variables(wd, out))
    plan = dataclasses.replace(build_plan(r), output=out)
    return r, plan, paths


@pytest.mark.parametrize("level", K.LEVELS)
@pytest.mark.parametrize("name", ["default", "strict"])
def test_two_runs_of_one_policy_share_a_key(tmp_path, name, level):
    pol, src = load_policy_sourced(name)
    a = K.key(level, *_run(pol, tmp_path), src)
    b = K.key(level, *_run(pol, tmp_path), src)
    assert a == b and a.level == level


def test_the_view_key_names_no_per_run_path(tmp_path):
    """The view's shape is what a pooled PID 1 builds before its run: the table's early
    steps, none at or under the run's own directories."""
    pol = load_policy("strict")
    r, plan, paths = _run(pol, tmp_path)
    shape = K.shape("view", r, plan, paths)
    text = json.dumps(shape)
    for p in (paths.rundir, paths.workdir, paths.output, os.path.basename(paths.rundir)):
        assert p not in text
    table = mount_plan.prepare(plan).steps
    early, late = prebuilt.split(table, prebuilt.run_dirs(paths))
    assert shape["early"] == [[s.kind, s.path, s.source, s.is_dir, s.attrs, s.exec]
                              for s in early]
    assert {s.kind for s in late} >= {"output"}


def _variant(tmp_path, text):
    return parse_policy('extends = ["strict"]\n' + text, file=str(tmp_path / "v.toml"))


SHAPING = {
    "stub": ['[network]\nmode = "host"\n'],
    "limits": ['[network]\nmode = "host"\n', '[limits]\nmemory = "100M"\n',
               "[limits]\nprocesses = 17\n"],
    "view": ['[network]\nmode = "host"\n', '[limits]\nmemory = "100M"\n',
             "[limits]\nprocesses = 17\n", '[filesystem]\nread = ["/srv"]\n',
             '[filesystem]\nexec = ["/etc"]\n', '[filesystem]\ndeny = ["/etc/hostname"]\n',
             '[filesystem]\ntmp_size = "8M"\n', "[filesystem]\nscratch_exec = true\n",
             'best_effort = true\n', '[network]\nmode = "loopback"\n'],
}


@pytest.mark.parametrize("level,text", [(lv, t) for lv, ts in SHAPING.items() for t in ts])
def test_what_shapes_the_prestarted_state_changes_the_key(tmp_path, level, text):
    base = K.key(level, *_run(_variant(tmp_path, ""), tmp_path))
    other = K.key(level, *_run(_variant(tmp_path, text), tmp_path))
    assert base != other


@pytest.mark.parametrize("text", ['[syscalls]\ndeny = ["ptrace"]\n', '[audit]\nfiles = "all"\n',
                                  '[env]\nset = {A = "1"}\n', '[limits]\nwall = "5s"\n'])
def test_what_is_applied_after_the_run_is_known_is_not_in_the_key(tmp_path, text):
    for level in K.LEVELS:
        assert K.key(level, *_run(_variant(tmp_path, ""), tmp_path)) == \
            K.key(level, *_run(_variant(tmp_path, text), tmp_path))


def test_the_policy_files_contents_are_in_the_key(tmp_path):
    p = tmp_path / "p.toml"
    p.write_text('extends = ["strict"]\n# one\n')
    pol, src1 = load_policy_sourced(str(p))
    p.write_text('extends = ["strict"]\n# two\n')
    pol2, src2 = load_policy_sourced(str(p))
    assert pol == pol2                               # the same policy, other bytes
    run = _run(pol, tmp_path)
    assert K.key("stub", *run, src1) != K.key("stub", *run, src2)
    assert K.key("stub", *run, src1) == K.key("stub", *run, src1)


def test_the_runs_own_steps_are_not_in_the_view_key(tmp_path):
    """Made per run, from the run's own table: a work directory under a read grant or
    outside it, writable or not, shares the pool of the policy's view."""
    (tmp_path / "srv" / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    pol = _variant(tmp_path, f'[filesystem]\nread = ["{tmp_path}/srv"]\n')
    under = K.key("view", *_run(pol, tmp_path, workdir=str(tmp_path / "srv" / "a")))
    outside = K.key("view", *_run(pol, tmp_path, workdir=str(tmp_path / "elsewhere")))
    writable = _variant(tmp_path, f'[filesystem]\nread = ["{tmp_path}/srv"]\n'
                                  'write = ["${WORKDIR}"]\n')
    assert under == outside == K.key("view", *_run(writable, tmp_path,
                                                   workdir=str(tmp_path / "elsewhere")))


def test_a_view_that_does_not_split_has_no_view_key(tmp_path):
    with pytest.raises(ValueError, match="does not split"):
        K.key("view", *_run(load_policy("strict"), tmp_path, workdir="/"))


def test_an_unknown_level_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown pool level"):
        K.shape("deep", *_run(load_policy("strict"), tmp_path))


# -- the key is what is built: renaming the run's directories never changes it, and a
# -- change to a policy path that is bound does
@pytest.mark.parametrize("n1,n2", [("ra", "rb"), ("zz", "aa")])
def test_renaming_the_run_directories_keeps_the_key_and_a_bound_path_changes_it(
        tmp_path, n1, n2):
    (tmp_path / "data").mkdir()
    (tmp_path / "datb").mkdir()
    pol = load_policy("strict")

    def plan_for(rundir: str, data: str) -> tuple[FsPlan, RunPaths]:
        wd, out = rundir + "/work", str(tmp_path / "state" / rundir.rsplit("/", 1)[1] / "out")
        for d in (wd, out):
            os.makedirs(d, exist_ok=True)
        rs = (FsRule(path=data), FsRule(path=wd, write=True), FsRule(path=out, write=True))
        return FsPlan(rules=rs, masks=(wd + "/.env",), output=out), \
            RunPaths(rundir, wd, out, rundir + "/tmp")

    k1 = K.key("view", pol, *plan_for(str(tmp_path / n1), str(tmp_path / "data")))
    assert k1 == K.key("view", pol, *plan_for(str(tmp_path / n2), str(tmp_path / "data")))
    assert k1 != K.key("view", pol, *plan_for(str(tmp_path / n1), str(tmp_path / "datb")))


# -- end to end: what the launcher sends is what the monitor host keys by -------------
def test_the_spec_names_the_policy_files_and_keys_a_run_by_them(tmp_path, monkeypatch):
    """Two runs of one policy file share a key; after an edit of the file (same length,
    mtime put back) the next run's key differs, whatever the edit changed."""
    from sandbox.launcher import session as S
    from sandbox.launcher.launcher import Launcher
    sent = []
    original = S.Session.send_msg

    def capture(self, msg):
        sent.append(msg)
        return original(self, msg)
    monkeypatch.setattr(S.Session, "send_msg", capture)
    p = tmp_path / "p.toml"
    p.write_text('extends = ["default"]\n[env]\nset = {A = "1"}\n')
    launcher = Launcher()
    for _ in range(2):
        assert launcher.spawn(["/bin/true"], policy=str(p)).status == "ok"
    st = os.stat(p)
    p.write_text('extends = ["default"]\n[env]\nset = {A = "2"}\n')
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert launcher.spawn(["/bin/true"], policy=str(p)).status == "ok"
    specs = [m for m in sent if type(m).__name__ == "Spec"]
    assert len(specs) == 3
    files = {s.path for s in specs[0].policy_sources if not s.is_dir}
    assert str(p.resolve()) in files and any(f.endswith("/default.toml") for f in files)
    keys = [K.for_spec(s, "limits") for s in specs]
    assert keys[0] is not None and keys[1] is not None and keys[2] is not None
    assert keys[0][0] == keys[1][0] != keys[2][0]
    # the monitor host passes the policy and plan it parsed once (runspec.build_context):
    # the same key as from the spec's own dicts
    from sandbox.monitor import runspec
    for s in specs:
        ctx = runspec.build_context(s)
        assert K.for_spec(s, "limits", ctx.policy, ctx.fs_plan) == K.for_spec(s, "limits")
    # a Policy object has no files: keyed by its content alone
    pol = load_policy("default")
    assert launcher.spawn(["/bin/true"], policy=pol).status == "ok"
    assert [m for m in sent if type(m).__name__ == "Spec"][-1].policy_sources == []


def test_a_run_without_namespaces_is_not_pooled():
    from sandbox.protocol import Spec
    assert K.for_spec(Spec(namespaces=False), "stub") is None


def test_too_many_policy_files_are_not_sent():
    from sandbox.launcher.prepare import wire_sources
    from sandbox.policy.sources import SourceFile
    from sandbox.protocol import POLICY_SOURCES_MAX
    many = tuple(SourceFile(f"/p/{i}.toml", "0" * 64) for i in range(POLICY_SOURCES_MAX + 1))
    assert wire_sources(many) == [] and len(wire_sources(many[:3])) == 3
    assert wire_sources((SourceFile("/" + "x" * 5000, ""),)) == []
