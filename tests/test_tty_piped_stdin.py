"""`-t` with a stdin that is no terminal warns that the program's terminal echoes it (probe L5).

`echo hi | sandbox exec -t -- cat` printed `hi` twice: the pty's line discipline
echoes what is written to it, and here that is the piped input. `ssh -t` warns
in this case. `sandbox exec` keeps the terminal the caller asked for (the
program's own terminal modes are its business) and says so in one line on
stderr, once; nothing at a real terminal, with --no-tty, or without -t.
Judged by the CLI's stdout and stderr, on the cold path and through a daemon.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pty_run import run_on_pty

SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")
WARNING = "sandbox: warning: stdin is not a terminal"


def _piped(tmp_path, *opts: str, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SANDBOX, "exec", *opts, "--", "cat"], cwd=tmp_path, input="hi\n",
                          capture_output=True, text=True, timeout=120, env=env)


def test_tty_with_piped_stdin_warns_once(tmp_path):
    proc = _piped(tmp_path, "-t")
    assert proc.returncode == 0, proc.stderr
    assert "hi" in proc.stdout
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith(WARNING)]
    assert len(warnings) == 1 and "echo" in warnings[0], proc.stderr


@pytest.mark.parametrize("opts", [(), ("--no-tty",)])
def test_pipes_are_not_warned_about(tmp_path, opts):
    proc = _piped(tmp_path, *opts)
    assert proc.returncode == 0 and proc.stdout == "hi\n" and WARNING not in proc.stderr, \
        proc.stderr


def test_a_real_terminal_is_not_warned_about():
    out, code = run_on_pty([SANDBOX, "exec", "-t", "--", "echo", "ok"])
    assert code == 0 and b"ok" in out and WARNING.encode() not in out, out


def test_through_a_daemon_too(tmp_path):
    home = tmp_path / "home"
    (home / "daemon").mkdir(parents=True, mode=0o700)
    os.chmod(home, 0o700)
    env = dict(os.environ, SANDBOX_HOME=str(home))
    subprocess.run([SANDBOX, "daemon", "start"], env=env, check=True, timeout=60,
                   capture_output=True)
    try:
        deadline = time.monotonic() + 30
        while b"running" not in subprocess.run([SANDBOX, "daemon", "status"], env=env,
                                               capture_output=True).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc = _piped(tmp_path, "-t", env=env)
        assert proc.returncode == 0 and "hi" in proc.stdout, proc.stderr
        assert proc.stderr.count(WARNING) == 1, proc.stderr
    finally:
        subprocess.run([SANDBOX, "daemon", "stop"], env=env, timeout=60, capture_output=True)
