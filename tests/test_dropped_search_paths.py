"""A caller's module search path that did not reach the program (everyday probe 3, E6).

`PYTHONPATH=src sandbox exec -- python3 -m app` failed with the program's own
ModuleNotFoundError: the environment is built from scratch (`[env] keep`), by
design, and no line said that the caller's PYTHONPATH stayed out; bubblewrap
passes it. Judged from the host: the CLI's stderr names the variable (never its
value), the flag it prints makes the same command work, and through the daemon
the caller's environment decides, not the daemon's.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from cli_env import SANDBOX, cli_env, own_daemon, served

pytestmark = pytest.mark.isolation
CMD = ["python3", "-c", "import pkg; print(pkg.X)"]


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    (w / "src" / "pkg").mkdir(parents=True)
    (w / "src" / "pkg" / "__init__.py").write_text("X = 'from src'\n")
    for path in (tmp_path, w, w / "src", w / "src" / "pkg"):
        os.chmod(path, 0o755)
    return str(w)


def cli(*args: str, work: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*SANDBOX, *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=120)


def hints(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("sandbox: hint: ")]


@pytest.mark.parametrize("policy", ["strict", "default"])
def test_a_dropped_pythonpath_is_named_with_the_flag_that_passes_it(policy, work):
    env = {**cli_env(), "PYTHONPATH": "src", "NODE_PATH": "/nonexistent/secret-value-1"}
    direct = subprocess.run(CMD, cwd=work, env=env, capture_output=True, text=True)
    assert direct.stdout == "from src\n"
    p = cli("exec", "--policy", policy, "--", *CMD, work=work, env=env)
    assert p.returncode == 1 and "ModuleNotFoundError" in p.stderr, p.stderr
    said = [h for h in hints(p.stderr) if "PYTHONPATH" in h]
    assert len(said) == 1 and "--env PYTHONPATH" in said[0], p.stderr
    assert "NODE_PATH" in said[0] and "secret-value-1" not in p.stderr   # names, not values
    again = cli("exec", "--policy", policy, "--env", "PYTHONPATH", "--", *CMD, work=work,
                env=env)
    assert (again.returncode, again.stdout) == (0, direct.stdout), again.stderr
    assert "PYTHONPATH" not in again.stderr


def test_no_hint_when_passed_unset_or_the_run_worked(work):
    env = {**cli_env(), "PYTHONPATH": "src"}
    passed = cli("exec", "--env", "PYTHONPATH", "--", "sh", "-c", "exit 3", work=work, env=env)
    assert passed.returncode == 3 and not hints(passed.stderr), passed.stderr
    unset = cli("exec", "--", *CMD, work=work, env=cli_env())
    assert unset.returncode == 1 and not hints(unset.stderr), unset.stderr
    worked = cli("exec", "--", "true", work=work, env=env)
    assert worked.returncode == 0 and not hints(worked.stderr), worked.stderr


def test_through_the_daemon_the_callers_environment_decides(work, tmp_path):
    with own_daemon(str(tmp_path / "home")) as env:
        p = cli("exec", "--", *CMD, work=work, env={**env, "PYTHONPATH": "src"})
        assert p.returncode == 1 and any("--env PYTHONPATH" in h for h in hints(p.stderr)), \
            p.stderr
        assert served(env) == 1
    with own_daemon(str(tmp_path / "home2")) as env:
        # a daemon started with PYTHONPATH: a caller without it gets no such hint
        subprocess.run([*SANDBOX, "daemon", "stop"], env=env, capture_output=True, timeout=60)
        start = subprocess.run([*SANDBOX, "daemon", "start"], env={**env, "PYTHONPATH": "src"},
                               capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stderr
        p = cli("exec", "--", *CMD, work=work, env=env)
        assert p.returncode == 1 and not hints(p.stderr), p.stderr
        assert served(env) == 1
