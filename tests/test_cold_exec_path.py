"""The cold `sandbox exec` path (issue 15.2): what its interpreters load, judged from the
outside (what a Python action forked from the monitor sees of its interpreter, what the
CLI process imported), never from a stopwatch."""
from __future__ import annotations

import os
import site
import textwrap

import pytest

import sandbox
import sandbox.audit
from sandbox.launcher.launcher import Launcher

ACTIONS = textwrap.dedent("""
    import sys
    from sandbox.workflow import action

    @action("coldpath.interp")
    def interp(ctx):
        ctx.store["no_site"] = sys.flags.no_site
        ctx.store["isolated"] = sys.flags.isolated
        ctx.store["site_loaded"] = "site" in sys.modules
        ctx.store["path"] = list(sys.path)
""")


@pytest.mark.parametrize("start", ["exec", "forkserver"])
def test_the_monitor_starts_without_site_and_keeps_the_import_path(tmp_path, start):
    """The monitor (exec'd, or the fork server) is `python -I -S` with the launcher's
    site-packages written out (launcher/interp.py): a Python action, a fork of it, sees
    an interpreter that never ran `site` and still has every site-packages directory
    and the sandbox package's own directory on its path. Before: `python -I -m`, and
    the assertion on no_site failed (0)."""
    (tmp_path / "coldpath_actions.py").write_text(ACTIONS)
    wf = {"name": "interp", "imports": ["coldpath_actions"],
          "stages": [{"actions": [{"name": "coldpath.interp"}]}]}
    with Launcher(start=start) as la:
        r = la.spawn(wf, code_paths=[str(tmp_path)], policy="strict")
    assert r.status == "ok", (r.reason, r.error)
    assert (r.store["no_site"], r.store["isolated"], r.store["site_loaded"]) == (1, 1, False)
    path = r.store["path"]
    for sp in site.getsitepackages():
        if os.path.isdir(sp):
            assert sp in path, (sp, path)
    assert os.path.dirname(os.path.dirname(sandbox.__file__)) in path


ORDER = r"""
import os, sys
seen = []
def hook(event, args):
    if event == "import" and args[0] in HEAVY:
        seen.append("import " + args[0])
    elif event == "subprocess.Popen" and any("sandbox.monitor.main" in str(a) for a in args[1]):
        seen.append("monitor")
HEAVY = {"sandbox.launcher.launcher", "sandbox.protocol", "sandbox.policy", "dataclasses",
         "sandbox.workflow"}
sys.addaudithook(hook)
from sandbox.thin.entry import main
code = main(sys.argv[1:])
print("CODE", code)
print("ORDER", " | ".join(seen))
"""


def _order(tmp_path, argv: list[str]) -> list[str]:
    import subprocess
    import sys
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "home"), "SANDBOX_DAEMON": "0"}
    p = subprocess.run([sys.executable, "-c", ORDER, *argv], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines()
                 if line.startswith(("CODE ", "ORDER ")))
    assert lines.get("CODE") == "0", (p.stdout, p.stderr)
    order = lines["ORDER"].split(" | ")
    assert order[0] == "monitor", order
    assert order.count("monitor") == 1, order    # the run took it: no second monitor
    return order


def test_a_cold_exec_starts_its_monitor_before_its_heavy_imports(tmp_path):
    """The cold CLI starts the exec'd monitor right after parsing its arguments
    (sandbox/launcher/early.py), so the monitor's start-up and imports run beside the
    CLI's own (the launcher, the protocol, the policy engine), and the run takes that
    monitor. Judged by the order of the CLI's own audit events (its Popen of the monitor,
    its imports), and by the run's exit code. Before: the monitor came last,
    `['import sandbox.launcher.launcher', 'import sandbox.protocol', 'import
    sandbox.policy', 'monitor']`. Nor does the CLI import `dataclasses` (with `inspect`,
    ~5 ms here) before that start: it did, for one small function of
    sandbox.monitor.stdio that now lives in sandbox.std_fds."""
    order = _order(tmp_path, ["exec", "--", "/bin/true"])
    assert {"import sandbox.launcher.launcher", "import sandbox.protocol",
            "import dataclasses"} <= set(order)


def test_a_cold_run_starts_its_monitor_before_loading_the_workflow(tmp_path):
    """`sandbox run` starts its exec'd monitor the same way (cli.common.early_monitor),
    before it imports the workflow package to load the file, the launcher and the policy
    engine. Before: the monitor came after all of them (`sandbox run
    docs/examples/hello.json` 296.5 -> 206.2 ms median, 15 alternated, with it)."""
    wf = os.path.join(os.path.dirname(__file__), "..", "docs", "examples", "hello.json")
    order = _order(tmp_path, ["run", os.path.abspath(wf)])
    assert {"import sandbox.workflow", "import sandbox.launcher.launcher",
            "import sandbox.protocol"} <= set(order)


def test_an_exec_d_monitor_s_python_action_imports_nothing_of_ours_in_the_sandbox(tmp_path):
    """An exec'd monitor imports what every run needs (preload.EVERY_RUN), not a Python
    action's side (its worker, the workflow package, the middleware): that was ~14 ms
    of every cold `sandbox exec`'s start. A Python action's PID 1 imports that side
    itself, once its run is known and before any layer (preload.action_side), so its
    program still imports nothing of the package inside the view (which may not even
    show it). Judged by strict's audit of every file call the program made: none names
    a file of the sandbox package; the action's own module is the one import."""
    (tmp_path / "coldpath_actions.py").write_text(ACTIONS)
    wf = {"name": "interp", "imports": ["coldpath_actions"],
          "stages": [{"actions": [{"name": "coldpath.interp"}]}]}
    with Launcher(start="exec") as la:
        r = la.spawn(wf, code_paths=[str(tmp_path)], policy="strict")
        assert r.status == "ok", (r.reason, r.error)
        paths = [x["path"] for x in sandbox.audit.records(r.run_id, db=la.audit_db)]
    package = os.path.dirname(sandbox.__file__)
    assert any("coldpath_actions" in p for p in paths), paths   # the audit saw the import
    assert not [p for p in paths if p.startswith(package + os.sep)], paths
