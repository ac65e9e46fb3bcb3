"""A PATH search that went past a hidden directory is not why a run failed (everyday
probe 3, E7).

With pyenv's, cargo's or ~/.local/bin on PATH (outside the view), every failing
run that started a command by name printed hints such as "/root/.pyenv/shims/
python3 is not in the sandbox's view: add read = [...]", though the search went
on to /usr/bin/python3 and the program failed on its own (exit 3): noise that
pointed at the wrong cause, and a grant (read) that would not even run the shim.
Judged from the host: the CLI's stderr; a command found nowhere else still gets
its line, and the flag it prints makes the command run.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from cli_env import SANDBOX, cli_env

pytestmark = pytest.mark.isolation


@pytest.fixture
def shims():
    """A directory outside every built-in view (not /tmp: the sandbox's is its own)."""
    top = tempfile.mkdtemp(prefix="sbx-shims-", dir="/var/tmp")
    for name, body in (("python3", 'exec /usr/bin/python3 "$@"'), ("mytool", "echo mytool ran")):
        path = os.path.join(top, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\n{body}\n")
        os.chmod(path, 0o755)
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def run(policy: str, shims: str, script: str, *flags: str) -> subprocess.CompletedProcess:
    env = cli_env()
    env["PATH"] = f"{shims}:/usr/local/bin:/usr/bin:/bin"
    work = tempfile.mkdtemp(prefix="sbx-shims-work-")   # the work directory: not the shims
    os.chmod(work, 0o755)
    try:
        return subprocess.run([*SANDBOX, "exec", "--policy", policy, *flags, "--", "sh", "-c",
                               script], env=env, cwd=work, capture_output=True, text=True,
                              timeout=120)
    finally:
        os.rmdir(work)


@pytest.mark.parametrize("policy", ["strict", "default"])
def test_a_search_that_found_the_command_elsewhere_gives_no_hint(policy, shims):
    p = run(policy, shims, 'python3 -c "import sys; sys.exit(3)"')
    assert p.returncode == 3, p.stderr
    assert "sandbox: hint" not in p.stderr, p.stderr


def test_a_command_only_in_the_hidden_directory_is_named_with_a_grant_that_runs_it(shims):
    """Known where the search's looks are audited (strict: files = "all"; under "denied"
    a stat is not notified, so default says nothing of it, as before)."""
    policy = "strict"
    p = run(policy, shims, "mytool")
    assert p.returncode == 127, p.stderr
    said = [ln for ln in p.stderr.splitlines() if ln.startswith("sandbox: hint: ")]
    assert len(said) == 1 and f"{shims}/mytool" in said[0], p.stderr
    flags = [x for m in re.finditer(r"--exec (\S+?)\)?$", said[0]) for x in ("--exec", m[1])]
    assert flags == ["--exec", shims], said
    again = run(policy, shims, "mytool", *flags)
    assert (again.returncode, again.stdout) == (0, "mytool ran\n"), again.stderr
