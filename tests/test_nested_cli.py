"""`sandbox exec` inside a sandbox says at once that sandboxes nest through the outer
launcher (probe L12).

`sandbox exec -- sandbox exec -- echo` first said `unknown policy 'default' ...
(known: none)` with a hint to --read a directory; following it ended in a
setup_error. The inner CLI now sees it runs in a sandbox (SANDBOX_RUN_ID, which
only a sandbox's program gets, with a seccomp filter on itself) and says so in
one line, exit 125, before any policy is looked up. Judged by the outer run's
stderr and exit code; a caller with a stray SANDBOX_RUN_ID but no filter still runs.
"""
from __future__ import annotations

import os
import subprocess
import sys

SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_module() -> None:
    # the inner CLI cannot write bytecode into this tree: compiled here first, so no
    # refused .pyc write of a just-edited module adds a hint to the outer run
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "sandbox")],
                   check=True, timeout=300)


def test_exec_inside_a_sandbox_is_one_line(tmp_path):
    for inner in (["exec", "--", "echo", "hi"], ["run", "wf.json"]):
        proc = subprocess.run([SANDBOX, "exec", "--read", ROOT, "--", SANDBOX, *inner],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 125, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "inside sandbox run" in lines[0] and "ctx.spawn" in lines[0], proc.stderr
        assert "unknown policy" not in proc.stderr and "hint" not in proc.stderr


def test_without_the_read_grant_too(tmp_path):
    """The probe's first step: the policies directory is not in the view."""
    proc = subprocess.run([SANDBOX, "exec", "--", SANDBOX, "exec", "--", "echo"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 125, proc.stderr
    assert "unknown policy" not in proc.stderr and "ctx.spawn" in proc.stderr, proc.stderr


def test_a_stray_run_id_outside_a_sandbox_changes_nothing(tmp_path):
    env = dict(os.environ, SANDBOX_RUN_ID="0" * 32)
    proc = subprocess.run([SANDBOX, "exec", "--", "echo", "hi"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "hi\n", proc.stderr
