"""A `sandbox exec` daemon serves only its own install, and only its install's current code.

Found by the everyday probe (2026-12-07): one socket per state directory let a daemon
of one venv serve every other venv's `sandbox exec` (its ${PYTHON} and its code, not
the caller's), and a daemon kept running the code it imported at its start after
`pip install -U` or a checkout moved (a fixed bug stayed live in every warm run until
someone restarted it). Judged from outside: which daemon served the run (its
`served` count), and the daemon's pid before and after the install changed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.thin import control as D
from sandbox.thin import wire

ROOT = Path(__file__).resolve().parent.parent


def _copy_install(tmp_path: Path) -> Path:
    """A second install of this very code: the package copied elsewhere (its compiled
    client and native libraries with it), imported through PYTHONPATH."""
    other = tmp_path / "other"
    shutil.copytree(ROOT / "sandbox", other / "sandbox", symlinks=True)
    shutil.copytree(ROOT / "policies", other / "policies")   # found beside the package
    return other


def _env(tmp_path: Path, pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SANDBOX_") and k != "PYTHONPATH"}
    env["SANDBOX_HOME"] = str(tmp_path / "state")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def _status(env: dict[str, str], cwd: Path) -> tuple[int, int, int] | None:
    """(pid, served, its fork server's pid) of the daemon of the install `env` imports,
    None if none runs."""
    p = _cli(env, cwd, "daemon", "status")
    m = re.search(r"running pid (\d+) .* served (\d+) .*forkserver (\d+) ", p.stdout)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def test_a_daemon_serves_its_own_install_only(tmp_path):
    other = _copy_install(tmp_path)
    mine, theirs = _env(tmp_path), _env(tmp_path, other)
    assert D.start(mine).startswith("running pid")
    try:
        served = _status(mine, tmp_path)
        assert served is not None and served[1] == 0
        # another install's clients, the Python one and the compiled one: run, cold
        p = _cli(theirs, tmp_path, "exec", "--", "sh", "-c", "exit 5")
        assert p.returncode == 5, p.stderr
        compiled = other / "sandbox" / "_native" / "sandbox"
        if os.access(compiled, os.X_OK):
            q = subprocess.run([str(compiled), "exec", "--", "sh", "-c", "exit 6"], env=theirs,
                               cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert q.returncode == 6, q.stderr
        assert _status(mine, tmp_path) == served, "another install's run was served here"
        assert _status(theirs, tmp_path) is None      # and it has no daemon of its own
        # this install's own client is served (the test can tell)
        assert _cli(mine, tmp_path, "exec", "--", "sh", "-c", "exit 7").returncode == 7
        assert _status(mine, tmp_path) == (served[0], 1, served[2])
    finally:
        D.stop(wire.socket_path(mine))


def test_a_daemon_restarts_on_its_installs_new_code(tmp_path):
    other = _copy_install(tmp_path)
    env = _env(tmp_path, other)
    p = _cli(env, tmp_path, "daemon", "start")
    assert p.returncode == 0, p.stderr
    first = _status(env, tmp_path)
    assert first is not None and first[1] == 0
    assert _cli(env, tmp_path, "exec", "--", "true").returncode == 0
    assert _status(env, tmp_path) == (first[0], 1, first[2])   # it serves this install
    try:
        # an upgrade replaces files: a new module appears in the package
        (other / "sandbox" / "upgraded.py").write_text("NEW = True\n")
        # the daemon execs itself (the same pid) afresh: a new fork server, nothing served
        deadline = time.monotonic() + 60
        now = first
        while time.monotonic() < deadline:
            now = _status(env, tmp_path)
            if now is not None and now[2] != first[2]:
                break
            time.sleep(0.2)
        assert now is not None and now[2] != first[2], "the daemon kept its old code"
        assert now[1] == 0
        # the new daemon is this install's, and serves it
        assert _cli(env, tmp_path, "exec", "--", "sh", "-c", "exit 3").returncode == 3
        after = _status(env, tmp_path)
        assert after is not None and after[1] == 1
        with open(f"/proc/{after[0]}/cmdline", "rb") as f:
            assert str(other).encode() in f.read()   # it imports the copy, not the venv's
    finally:
        _cli(env, tmp_path, "daemon", "stop")
    assert _status(env, tmp_path) is None


@pytest.mark.parametrize("path", ["/opt/a/sandbox", "/opt/b/sandbox", "/"])
def test_the_install_id_is_a_function_of_the_package_directory(path):
    assert re.fullmatch(r"[0-9a-f]{8}", wire.install_id(path))
    assert wire.install_id(path) == wire.install_id(path)
    assert wire.install_id("/opt/a/sandbox") != wire.install_id("/opt/b/sandbox")
