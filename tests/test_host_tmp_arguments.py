"""A file of the host's /tmp named on the command line (everyday probe 3, E1/E2).

`sandbox exec -- bash /tmp/x.sh`, `python3 /tmp/job.py` or `cat /tmp/data.csv`
(a file from mktemp, a download) failed with the program's own "No such file
or directory" and no word from the sandbox: the sandbox's /tmp is its own and
starts empty, and the audit records the open as allowed (the private /tmp), so
no hint came. A program itself in /tmp had its one line, but it suggested
`--exec /tmp`, which the CLI then refuses (the host's /tmp cannot be granted
whole). Judged from the host: the CLI's stderr, cold and through the daemon,
and the suggested flags applied as printed must make the same command work.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from cli_env import SANDBOX, cli_env as _env, own_daemon, served

pytestmark = pytest.mark.isolation
FLAG = re.compile(r"--(read|exec) (/\S+)")


def cli(*args: str, work: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SANDBOX, *args], cwd=work, env=env or _env(),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def host_tmp():
    """A directory of the host's /tmp (never the run's work directory), readable by all."""
    top = tempfile.mkdtemp(prefix="sbx-hostarg-", dir="/tmp")
    os.chmod(top, 0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def work(tmp_path):
    w = tmp_path / "work"
    w.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(w, 0o755)
    return str(w)


def _flags(stderr: str) -> list[str]:
    """The grants the CLI's lines suggest, as flags (`--read X`, `--exec X`)."""
    out: list[str] = []
    for kind, path in FLAG.findall(stderr):
        out += [f"--{kind}", path.rstrip(");,")]
    return out


@pytest.mark.parametrize("policy", ["strict", "default"])
def test_an_argument_in_the_hosts_tmp_gets_a_hint_that_works(policy, host_tmp, work):
    data = os.path.join(host_tmp, "data.txt")
    with open(data, "w") as f:
        f.write("from the host's tmp\n")
    os.chmod(data, 0o644)
    p = cli("exec", "--policy", policy, "--", "cat", data, work=work)
    assert p.returncode == 1 and "No such file" in p.stderr, p.stderr
    hints = [ln for ln in p.stderr.splitlines() if ln.startswith("sandbox: hint: ")]
    assert any(data in h and "/tmp" in h and "its own" in h for h in hints), p.stderr
    flags = _flags("\n".join(hints))
    assert flags == ["--read", host_tmp], p.stderr
    again = cli("exec", "--policy", policy, *flags, "--", "cat", data, work=work)
    assert again.returncode == 0 and again.stdout == "from the host's tmp\n", again.stderr


def test_a_script_directly_in_tmp_is_granted_itself_not_all_of_tmp(work):
    """The suggestion for a file of /tmp itself names the file: `--read /tmp` is refused."""
    fd, script = tempfile.mkstemp(prefix="sbx-hostarg-", suffix=".sh", dir="/tmp")
    try:
        os.write(fd, b"#!/bin/sh\necho script-ran\n")
        os.close(fd)
        os.chmod(script, 0o755)
        for argv in (["sh", script], [script]):
            p = cli("exec", "--", *argv, work=work)
            assert p.returncode in (2, 127), p.stderr   # dash says 2, the exec 127
            flags = _flags(p.stderr)
            assert flags and all(f.startswith("--") or f == script for f in flags), p.stderr
            again = cli("exec", *flags, "--", *argv, work=work)
            assert again.returncode == 0 and again.stdout == "script-ran\n", \
                (argv, flags, again.stderr)
    finally:
        os.unlink(script)


def test_no_hint_for_a_run_that_worked_or_a_path_the_host_lacks_too(host_tmp, work):
    data = os.path.join(host_tmp, "data.txt")
    with open(data, "w") as f:
        f.write("x\n")
    ok = cli("exec", "--", "sh", "-c", f"cat {data} 2>/dev/null; true", work=work)
    assert ok.returncode == 0 and "sandbox: hint" not in ok.stderr, ok.stderr
    missing = cli("exec", "--", "cat", os.path.join(host_tmp, "absent"), work=work)
    assert missing.returncode == 1 and "sandbox: hint" not in missing.stderr, missing.stderr
    # the work directory may itself be under /tmp: its files are in the view, no hint
    inside = cli("exec", "--", "cat", os.path.join(work, "absent"), work=work)
    assert inside.returncode == 1 and "sandbox: hint" not in inside.stderr, inside.stderr


def test_the_hint_comes_through_the_daemon_too(host_tmp, work, tmp_path):
    with own_daemon(str(tmp_path / "home")) as env:
        data = os.path.join(host_tmp, "data.txt")
        with open(data, "w") as f:
            f.write("warm\n")
        os.chmod(data, 0o644)
        p = cli("exec", "--", "python3", data, work=work, env=env)
        assert p.returncode == 2, p.stderr
        assert _flags(p.stderr) == ["--read", host_tmp], p.stderr
        assert served(env) == 1
