"""A work directory inside a git work tree (everyday probe 3, E3).

`cd repo/src && sandbox exec -- git log` (or a Makefile's `git describe`)
failed with exit 128 and git's own "not a git repository (or any parent up to
mount point ...)": the view shows the work directory, not the repository
around it, and no line said so; bubblewrap's `--ro-bind / /` shows it. Judged
from the host: the CLI's stderr, and the flags the hint prints, applied as
printed, make the command give the direct run's output under `strict` and
`default` (whose copy-on-write work directory is a mount of its own, where git
stops looking unless told to cross it).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.isolation
SANDBOX = [sys.executable, "-m", "sandbox"]
FLAG = re.compile(r"--(read|env) (\S+?)[);,]*(?=\s|$)")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "GIT_"))}
    env["SANDBOX_DAEMON"] = "0"
    return env


@pytest.fixture
def repo(tmp_path):
    top = tmp_path / "proj"
    (top / "src").mkdir(parents=True)
    (top / "src" / "a.c").write_text("int a;\n")
    for path in (tmp_path, top, top / "src"):
        os.chmod(path, 0o755)
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
        subprocess.run([*GIT, *argv], cwd=top, check=True, capture_output=True)
    subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
    return str(top)


def cli(*args: str, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SANDBOX, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("policy", ["strict", "default"])
def test_git_in_a_subdirectory_is_told_how_to_see_its_repository(policy, repo):
    sub = os.path.join(repo, "src")
    cmd = ["git", "log", "--format=%s"]
    direct = subprocess.run(cmd, cwd=sub, env=_env(), capture_output=True, text=True)
    assert direct.returncode == 0 and direct.stdout == "first\n"
    p = cli("exec", "--policy", policy, "--", *cmd, cwd=sub)
    assert p.returncode == 128, p.stderr
    hints = [ln for ln in p.stderr.splitlines() if ln.startswith("sandbox: hint: ")]
    assert len(hints) == 1 and repo in hints[0] and "git" in hints[0], p.stderr
    flags = [x for kind, value in FLAG.findall(hints[0]) for x in (f"--{kind}", value)]
    assert flags[:2] == ["--read", repo], hints
    again = cli("exec", "--policy", policy, *flags, "--", *cmd, cwd=sub)
    assert (again.returncode, again.stdout) == (0, direct.stdout), again.stderr


def test_no_hint_at_the_top_of_the_tree_nor_for_a_run_that_worked(repo):
    top = cli("exec", "--", "sh", "-c", "git log --format=%s; exit 3", cwd=repo)
    assert top.returncode == 3 and top.stdout == "first\n", top.stderr
    assert "sandbox: hint" not in top.stderr, top.stderr
    ok = cli("exec", "--", "sh", "-c", "git log 2>/dev/null; true",
             cwd=os.path.join(repo, "src"))
    assert ok.returncode == 0 and "sandbox: hint" not in ok.stderr, ok.stderr
    # a tree the policy already shows (--read of its top) is not hinted again
    shown = cli("exec", "--policy", "strict", "--read", repo, "--", "sh", "-c", "exit 4",
                cwd=os.path.join(repo, "src"))
    assert shown.returncode == 4 and "sandbox: hint" not in shown.stderr, shown.stderr
