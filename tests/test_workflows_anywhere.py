"""Workflows run from any directory: a workflow file's policy path and imports
are relative to the file; `Launcher().spawn("x.json")` behaves like `sandbox
run x.json`; the launcher's pre-check looks exactly where the child will."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import Launcher, WorkflowError, load_workflow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _project(tmp: Path) -> Path:
    """A workflow with its own policy file and action module beside it."""
    proj = tmp / "proj"
    proj.mkdir()
    (proj / "mine.toml").write_text('extends = ["strict"]\n[limits]\nwall = "30s"\n')
    (proj / "my_wf_actions.py").write_text(
        "from sandbox.workflow import action\n\n"
        "@action('greet')\ndef greet(ctx):\n    ctx.store.put('greeting', 'hi from beside')\n")
    wf = proj / "wf.json"
    wf.write_text(json.dumps({"name": "anywhere", "policy": "mine.toml",
                              "imports": ["my_wf_actions"],
                              "stages": [{"id": "s", "actions": ["greet"]}]}))
    for p in (tmp, proj):
        p.chmod(0o755)
    return wf


def test_policy_path_is_relative_to_the_file(tmp_path):
    wf = load_workflow(_project(tmp_path))
    assert wf.policy == str(tmp_path / "proj" / "mine.toml")
    assert wf.base_dir == str(tmp_path / "proj")
    assert type(wf).from_dict(wf.to_dict()) == wf     # base_dir is not part of the definition


@pytest.mark.isolation
def test_cli_runs_a_workflow_from_another_directory(tmp_path):
    wf = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "state")}
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", str(wf), "--json"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["status"] == "ok" and r["store"]["greeting"] == "hi from beside"
    assert r["policy"] == "mine"


@pytest.mark.isolation
def test_repository_examples_run_from_any_directory(tmp_path):
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "state")}
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", "--json",
                        os.path.join(ROOT, "docs", "examples", "spawn_process.json")],
                       cwd="/", env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["store"]["sum"] == 6


@pytest.mark.isolation
def test_spawn_of_a_json_path_behaves_like_the_cli(tmp_path, monkeypatch):
    wf = _project(tmp_path)
    monkeypatch.chdir("/")
    with Launcher() as launcher:
        by_path = launcher.spawn(str(wf))
        by_object = launcher.spawn(load_workflow(str(wf)))
    for r in (by_path, by_object):
        assert (r.status, r.policy, r.store.get("greeting")) == ("ok", "mine", "hi from beside")


def test_precheck_uses_the_childs_path_not_the_callers(tmp_path, monkeypatch):
    """A module only on the caller's sys.path would pass a check that searched it,
    and then fail in the child: it must be refused before anything runs."""
    hidden = tmp_path / "callers_only"
    hidden.mkdir()
    (hidden / "callers_only_mod.py").write_text(
        "from sandbox.workflow import action\n\n@action('x')\ndef x(ctx):\n    pass\n")
    monkeypatch.syspath_prepend(str(hidden))
    wf = {"name": "w", "imports": ["callers_only_mod"], "stages": [{"id": "s", "actions": ["x"]}]}
    with Launcher() as launcher:
        with pytest.raises(WorkflowError, match="callers_only_mod"):
            launcher.spawn(wf)
