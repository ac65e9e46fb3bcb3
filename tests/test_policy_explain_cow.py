"""`policy explain` knows the copy-on-write work directory (probe L4).

`sandbox policy explain default write WORKDIR/x` said "denied ... does not
grant write" where the run could write there: under `workdir =
"copy-on-write"` the write goes to the run's own layer over the work directory
and the host's file stays as it was. The explanation now says so, for the
current directory and for --workdir, and is checked against a real run.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")


@pytest.fixture
def base():
    """A directory outside /tmp (the sandbox's /tmp is its own, writable anyway)."""
    d = tempfile.mkdtemp(prefix="explain-cow-", dir="/var/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _explain(cwd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SANDBOX, "policy", "explain", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_a_write_in_the_work_directory_goes_to_the_runs_layer(base):
    work = base / "w"
    work.mkdir()
    (work / "x").write_text("host\n")
    for op in ("write", "create", "delete"):
        proc = _explain(work, "default", op, str(work / "x"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith(f"allowed: {op} {work / 'x'}"), proc.stdout
        assert 'filesystem.workdir: "copy-on-write"' in proc.stdout, proc.stdout
        assert "own layer" in proc.stdout and "untouched" in proc.stdout, proc.stdout
    # what a run does agrees: written there, and the host's file is as it was
    run = subprocess.run([SANDBOX, "exec", "--", "sh", "-c", "echo run > x && cat x"],
                         cwd=work, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "run\n", run.stderr
    assert (work / "x").read_text() == "host\n"


def test_workdir_flag_and_mode_are_followed(base):
    work, elsewhere = base / "w", base / "e"
    work.mkdir()
    elsewhere.mkdir()
    target = str(work / "x")
    proc = _explain(elsewhere, "--workdir", str(work), "default", "write", target)
    assert proc.returncode == 0 and "own layer" in proc.stdout, proc.stdout
    proc = _explain(elsewhere, "default", "write", target)       # not the work directory
    assert proc.returncode == 1 and "own layer" not in proc.stdout, proc.stdout
    proc = _explain(work, "--workdir-mode", "direct", "default", "write", target)
    assert proc.returncode == 1, proc.stdout
    proc = _explain(work, "strict", "write", target)             # no overlay in strict
    assert proc.returncode == 1, proc.stdout
    proc = _explain(work, "--json", "default", "write", target)
    assert '"allowed": true' in proc.stdout and "copy-on-write" in proc.stdout, proc.stdout


@pytest.mark.parametrize("op", ["write", "read"])
def test_an_explicit_write_grant_is_the_hosts(base, op):
    """`--write .` wins over the overlay (the host's directory is written): said as such."""
    work = base / "w"
    work.mkdir()
    proc = _explain(work, "--write", ".", "default", op, str(work / "x"))
    assert proc.returncode == 0 and "own layer" not in proc.stdout, proc.stdout
