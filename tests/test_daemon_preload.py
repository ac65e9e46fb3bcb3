"""A run the `sandbox exec` daemon serves is a fork of the daemon: whatever it imports
after the fork it imports again in every run (each a new process), 19 ms of a 160 ms
warm run measured with cProfile in the forked runs at load 7. So the daemon's warm-up
imports everything a run imports, and this test holds it to that: after `preload()`,
one whole `sandbox exec` through the same code imports nothing, and finds the plan's
caches warm (`daemon.warm_plan`: the homes of /etc/passwd's users are not walked again)."""
from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import os, sys
from sandbox.thin import daemon
d = daemon.Daemon(os.path.join(os.getcwd(), "sock"))
d.warm()                      # what the daemon does before it serves (preload included)
before = set(sys.modules)
import pwd
walks = []
real_getpwall = pwd.getpwall
pwd.getpwall = lambda: walks.append(1) or real_getpwall()
from sandbox.cli import common
from sandbox.cli.main import main
common.CLI_FORKSERVER = d.forkserver.for_run(os.path.join(os.getcwd(), "lock"))
try:
    code = main(["exec", "--", "/bin/true"], d.parser)    # what a forked run does
finally:
    d.forkserver.close()
new = sorted(m for m in set(sys.modules) - before)
print("CODE", code)
print("NEW", " ".join(new))
print("WALKS", len(walks))
"""

def test_a_run_served_by_the_daemon_imports_nothing_after_the_warm_up(tmp_path):
    env = {**os.environ, "SANDBOX_HOME": str(tmp_path / "home")}
    p = subprocess.run([sys.executable, "-I", "-c", SCRIPT], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=120)
    lines = dict(line.split(" ", 1) if " " in line else (line, "")
                 for line in p.stdout.splitlines() if line.startswith(("CODE", "NEW", "WALKS")))
    assert lines.get("CODE") == "0", (p.stdout, p.stderr)
    assert lines.get("NEW") == "", f"imported by the run, not by preload(): {lines.get('NEW')}"
    # the plan's caches too (daemon.warm_plan): the users' homes are not looked up again
    assert lines.get("WALKS") == "0", (p.stdout, p.stderr)
