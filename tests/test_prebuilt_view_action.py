"""A Python action served by a pooled view (sandbox/isolation/prebuilt.py, planned.py).

A Python action's PID 1 leaves the namespace-wide layers to a throw-away setup
child; in a PID 1 pooled at the "view" level that child finishes the view the
pool built (the run's own steps, the Landlock ruleset made ahead completed with
the run's rules). What must hold, judged from inside the action and from the
host:

- the action sees the view a cold start gives it (mount table, top directories,
  the /etc copies, identity), and the pool really served it (`view_prebuilt`);
- the freshness checks hold for it as for an exec'd program: a directory the
  policy binds, replaced after the pool filled, is read as it is now;
- nothing of the pool's is left to the program: it holds no Landlock ruleset
  descriptor.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import test_prebuilt_view as base

ACTION = '''
import os, subprocess
from sandbox.workflow import action


@action("probe")
def probe(ctx):
    script = ctx.params.get("script")
    if script:
        p = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)
        ctx.store["out"], ctx.store["err"] = p.stdout, p.stderr
    path = ctx.params.get("read")
    if path:
        try:
            with open(path) as f:
                ctx.store["read"] = f.read()
        except OSError as exc:
            ctx.store["read"] = f"error: {exc.strerror}"
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    ctx.store["fds"] = fds
'''


def _runs(tmp_path, n: int, params: dict, *, policy: str = "strict", env: dict | None = None,
          change: str = "") -> list[dict]:
    """`n` runs of the probe action (each after the pool refilled), then `change` (Python,
    on the host), then `n` more if it is given: status, view_prebuilt and the store."""
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "probe_action.py").write_text(ACTION)
    for d in (tmp_path, code_dir):
        os.chmod(d, 0o755)
    wd = tmp_path / "wd"
    wd.mkdir(exist_ok=True)
    script = f"""
import json, os, shutil, time
from sandbox import Launcher, Workflow
wf = Workflow.from_dict({{"name": "probe", "imports": ["probe_action"],
                          "stages": [{{"actions": [{{"name": "probe", "params": {params!r}}}]}}]}})
l = Launcher()
out = []
def run():
    r = l.spawn(wf, policy={policy!r}, workdir={str(wd)!r}, code_paths=[{str(code_dir)!r}])
    out.append({{"status": r.status, "reason": r.reason, "view": r.view_prebuilt,
                 "store": r.store}})
    time.sleep(0.3)   # the pool refills between runs
for i in range({n}):
    run()
{change}
if {bool(change)!r}:
    for i in range({n}):
        run()
l.close()
print(json.dumps(out))
"""
    p = subprocess.run([sys.executable, "-c", script], env={**os.environ, **(env or {})},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.isolation
def test_a_pooled_python_action_sees_the_view_of_a_cold_one(tmp_path):
    pooled = _runs(tmp_path, 4, {"script": base.PROBE})
    cold = _runs(tmp_path, 1, {"script": base.PROBE}, env={"SANDBOX_SPARE": "0"})
    assert all(r["status"] == "ok" for r in pooled + cold), pooled + cold
    assert not cold[0]["view"]
    views = [r for r in pooled if r["view"]]
    assert views, "no run took a pooled view: " + repr([r["view"] for r in pooled])
    want = base._normal(cold[0]["store"]["out"])
    for r in views:
        assert r["store"]["err"] == cold[0]["store"]["err"]
        assert base._normal(r["store"]["out"]) == want


@pytest.mark.isolation
def test_a_pooled_python_action_holds_no_landlock_ruleset(tmp_path):
    """The ruleset made with the view is the run's setup child's to complete: PID 1
    closes its own descriptor of it once the child answered (planned.main), and its
    privileges layer closes whatever else it does not keep; the action (a fork of
    PID 1) holds none, pooled or cold."""
    runs = _runs(tmp_path, 4, {}) + _runs(tmp_path, 1, {}, env={"SANDBOX_SPARE": "0"})
    assert all(r["status"] == "ok" for r in runs), runs
    assert any(r["view"] for r in runs[:4]), runs
    for r in runs:
        held = {fd: what for fd, what in r["store"]["fds"].items() if "landlock" in what}
        assert not held, (r["view"], r["store"]["fds"])


@pytest.mark.isolation
def test_a_directory_replaced_after_the_pool_filled_is_read_as_it_is_now(tmp_path):
    """Attack on the pool's freshness through a Python action: the caller's directory
    the policy binds is replaced between the pool's fill and the run."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("old\n")
    pol = tmp_path / "pol.toml"
    pol.write_text(f'extends = ["strict"]\n[filesystem]\nread = ["{data}"]\n')
    out = _runs(tmp_path, 3, {"read": str(data / "f")}, policy=str(pol),
                change=f"shutil.rmtree({str(data)!r}); os.mkdir({str(data)!r}); "
                       f"open({str(data / 'f')!r}, 'w').write('new\\n')")
    assert [r["status"] for r in out] == ["ok"] * 6, out
    assert [r["store"]["read"] for r in out] == ["old\n"] * 3 + ["new\n"] * 3, out
    assert any(r["view"] for r in out[:3]), out   # the pool served the first runs
