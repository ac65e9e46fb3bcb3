"""No sandboxee is a fork of a process that held the caller's environment or heap
(issue 10 finding 4).

The caller is a fresh interpreter (or the CLI) whose environment holds
AWS_SECRET_ACCESS_KEY=<env canary> and whose heap holds a module global
<heap canary>. On every way a sandboxee is started (the API default, the fork
server with and without its spare, start="exec", exec'd programs, Python
workflows, a nested spawn, `sandbox exec` and `sandbox run`), the sandboxee
searches its own /proc/self/environ and every readable mapping of
/proc/self/mem for the canaries (tests/canary/canary_scan.py: it is given
only a prefix and hashes, so it never holds a canary itself). A positive
control, passed legitimately (spawn env= and the store), must be found, so
the scan is shown to see what is there.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.isolation

CANARY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "canary")
PREFIX = "SBXCANARY"

DRIVER = r"""
import json, os, sys
sys.path.insert(0, CANARY_DIR)
HEAP_CANARY = open(HEAP_FILE).read()   # the caller's heap: a module global
a = json.loads(sys.argv[1])
from sandbox.launcher.launcher import Launcher
la = Launcher(**({"start": a["start"]} if a["start"] else {}), capture_output=True)
scan = {"name": "canary.scan", "params": {"prefix": a["prefix"], "spec": a["spec"]}}
nest = {"name": "canary.nest", "params": {"prefix": a["prefix"], "spec": a["spec"],
                                         "visible": a["visible"]}}
env = {"SBX_VISIBLE": a["visible"]}
if a["kind"] == "exec":
    r = la.spawn([sys.executable, "-I", os.path.join(CANARY_DIR, "canary_scan.py"),
                  a["prefix"], json.dumps(a["spec"])], env=env, workdir=CANARY_DIR)
    out = {"status": r.status, "reason": r.reason, "stderr": r.stderr,
           "scan": json.loads(r.stdout) if r.status == "ok" else None}
else:
    wf = {"name": "canary", "imports": ["canary_actions"],
          "stages": [{"id": "s", "actions": [scan if a["kind"] == "workflow" else nest]}]}
    r = la.spawn(wf, env=env, store={"visible": a["visible"]}, code_paths=[CANARY_DIR],
                 workdir=CANARY_DIR)
    out = {"status": r.status, "reason": r.reason, "stderr": r.stderr,
           "scan": r.store.get("scan"), "nested": r.store.get("nested_status")}
print(json.dumps(out))
"""


def _canaries(tmp_path):
    names = ("env", "heap", "visible")
    values = {n: f"{PREFIX}{n}{os.urandom(12).hex()}" for n in names}
    spec = {n: [len(v), hashlib.sha256(v.encode()).hexdigest()] for n, v in values.items()}
    heap = tmp_path / "heap"
    heap.write_text(values["heap"])
    heap.chmod(0o644)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": values["env"]}
    return values, spec, str(heap), env


def _judge(scan: dict, exec_target: bool) -> None:
    assert scan is not None and scan["scanned"] > 1 << 20 and scan["regions"] > 5, scan
    found = scan["found"]
    # the positive control: what the run was given is seen, so the scan can see
    assert "memory" in found.get("visible", []), found
    if exec_target:
        assert "environ" in found.get("visible", []), found
    assert "env" not in found and "heap" not in found, found


@pytest.mark.parametrize("start,spare", [(None, "1"), (None, "0"), ("exec", "1")],
                         ids=["default", "forkserver-nospare", "exec"])
@pytest.mark.parametrize("kind", ["exec", "workflow", "nested"])
def test_the_callers_environment_and_heap_never_reach_the_sandboxee(tmp_path, start, spare,
                                                                     kind):
    values, spec, heap, env = _canaries(tmp_path)
    env["SANDBOX_SPARE"] = spare
    arg = json.dumps({"start": start, "kind": kind, "prefix": PREFIX, "spec": spec,
                      "visible": values["visible"]})
    code = f"CANARY_DIR = {CANARY_DIR!r}\nHEAP_FILE = {heap!r}\n" + DRIVER
    p = subprocess.run([sys.executable, "-c", code, arg], env=env, capture_output=True,
                       text=True, timeout=120, cwd=CANARY_DIR)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["status"] == "ok", out
    if kind == "nested":
        assert out["nested"] == "ok", out
    _judge(out["scan"], exec_target=(kind == "exec"))


def test_sandbox_exec_cli(tmp_path):
    values, spec, _, env = _canaries(tmp_path)
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--env",
                        f"SBX_VISIBLE={values['visible']}", "--",
                        sys.executable, "-I", "canary_scan.py", PREFIX, json.dumps(spec)],
                       env=env, capture_output=True, text=True, timeout=120, cwd=CANARY_DIR)
    assert p.returncode == 0, p.stderr
    _judge(json.loads(p.stdout), exec_target=True)


@pytest.mark.parametrize("kind", ["workflow", "nested"])
def test_sandbox_run_cli(tmp_path, kind):
    values, spec, _, env = _canaries(tmp_path)
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({
        "name": "canary", "imports": ["canary_actions"], "store": {"visible": values["visible"]},
        "stages": [{"id": "s", "actions": [{"name": f"canary.{'scan' if kind == 'workflow' else 'nest'}",
                                             "params": {"prefix": PREFIX, "spec": spec,
                                                        "visible": values["visible"]}}]}]}))
    wf.chmod(0o644)
    tmp_path.chmod(0o755)
    p = subprocess.run([sys.executable, "-m", "sandbox", "run", str(wf), "--json"],
                       env=env, capture_output=True, text=True, timeout=120, cwd=CANARY_DIR)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr)
    res = json.loads(p.stdout)
    assert res["status"] == "ok" and res["store"].get("nested_status", "ok") == "ok", res
    _judge(res["store"]["scan"], exec_target=False)
