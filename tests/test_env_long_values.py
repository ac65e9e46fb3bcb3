"""An environment value is bounded by what exec accepts, and one over it is named (probe L11).

`X=<100000 characters> sandbox exec --env X -- ...` failed with `env{}: 100000
characters, over its 65536`, naming no variable, where a direct exec accepts a
string of up to MAX_ARG_STRLEN (131072 bytes, "NAME=VALUE" and its NUL). The
wire bound is now the kernel's, and a variable over it is refused in one line
that names it. Judged by what the sandboxed program receives, and the CLI's stderr.
"""
from __future__ import annotations

import os
import subprocess
import sys

SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")
MAX_ARG_STRLEN = 131072


def _run(tmp_path, value: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "BIG_VALUE": value}
    return subprocess.run([SANDBOX, "exec", "--env", "BIG_VALUE", "--", *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)


def test_a_value_exec_accepts_reaches_the_program(tmp_path):
    for n in (100_000, MAX_ARG_STRLEN - len("BIG_VALUE=") - 1):
        proc = _run(tmp_path, "x" * n, "sh", "-c", 'printf %s "${#BIG_VALUE}"')
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == str(n)


def test_a_value_over_it_is_named_in_one_line(tmp_path):
    """The caller's own exec bounds what --env can keep; a policy's [env] set can say more."""
    pol = tmp_path / "big.toml"
    pol.write_text('name = "big"\nextends = ["default"]\n[env]\n'
                   f'set = {{ BIG_VALUE = "{"x" * 200_000}" }}\n')
    proc = subprocess.run([SANDBOX, "exec", "--policy", str(pol), "--", "true"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 125, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "BIG_VALUE" in lines[0], proc.stderr
    assert "131072" in lines[0], proc.stderr


def test_the_python_api_names_it_too(tmp_path):
    from sandbox.errors import InputError
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit.sqlite")
    try:
        la.spawn(["true"], env={"HUGE": "y" * MAX_ARG_STRLEN}, workdir=str(tmp_path))
    except InputError as exc:
        assert "HUGE" in str(exc) and "MAX_ARG_STRLEN" in str(exc)
    else:
        raise AssertionError("spawn accepted a value exec cannot take")
