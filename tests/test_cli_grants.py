"""Grants on the command line (--read/--write/--exec, --net, --memory/--cpu/
--wall/--processes, --env), composed onto the named policy by the policy
loader, shown by `sandbox policy show`, and enforced; judged from the host."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sandbox(*args: str, cwd: str | Path = ROOT, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd,
                          env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_policy_show_composes_every_grant(tmp_path):
    data = tmp_path / "data"
    p = sandbox("policy", "show", "strict", "--json", "--read", "data", "--write", str(tmp_path / "o"),
                "--exec", str(tmp_path / "bin"), "--net", "loopback", "--memory", "256MiB",
                "--cpu", "20s", "--wall", "5s", "--processes", "9", "--env", "TERM",
                "--env", "MODE=fast", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    pol = json.loads(p.stdout)["policy"]
    assert pol["name"] == "strict+grants"
    assert str(data) in pol["filesystem"]["read"]               # relative made absolute
    assert str(tmp_path / "o") in pol["filesystem"]["write"]
    assert str(tmp_path / "bin") in pol["filesystem"]["exec"]
    assert "/etc/shadow*" in pol["filesystem"]["deny"]          # the policy's denies stay
    assert pol["network"]["mode"] == "loopback"
    limits = {k: pol["limits"][k] for k in ("memory", "cpu", "wall", "processes")}
    assert limits == {"memory": 256 << 20, "cpu": 20.0, "wall": 5.0, "processes": 9}
    assert "TERM" in pol["env"]["keep"] and pol["env"]["set"]["MODE"] == "fast"


def test_bad_grants_are_refused_by_the_loader_with_the_flag():
    for args, flag in ((["--memory", "lots"], "--memory"), (["--wall", "0"], "--wall"),
                       (["--processes", "-3"], "--processes"), (["--env", "1X=y"], "--env"),
                       (["--cpu", "1e19"], "--cpu")):
        p = sandbox("policy", "show", "default", *args)
        assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
        assert p.stderr.startswith(f"sandbox: error: {flag}")
        p = sandbox("exec", *args, "--", "sh", "-c", "echo RAN")
        assert p.returncode == 125 and p.stdout == "" and flag in p.stderr


@pytest.mark.parametrize("flag", ["--read", "--write", "--exec"])
def test_an_empty_or_missing_grant_is_refused_not_dropped(tmp_path, flag):
    """`--write "$OUT"` with OUT unset granted the whole current directory, and a
    grant of a path that does not exist was dropped without a word (the program then
    met a read-only file system); both are one line now, nothing run."""
    for path, why in (("", "an empty path"), (str(tmp_path / "nope"), "no such file")):
        p = sandbox("exec", flag, path, "--", "sh", "-c", "echo RAN > ran", cwd=tmp_path)
        assert p.returncode == 125 and len(p.stderr.splitlines()) == 1, p.stderr
        assert why in p.stderr and flag in p.stderr and "Traceback" not in p.stderr
        assert not (tmp_path / "ran").exists()
    show = sandbox("policy", "show", "strict", flag, "", cwd=tmp_path)
    assert show.returncode == 2 and "an empty path" in show.stderr
    # a policy may be shown for a path still to be made
    assert sandbox("policy", "show", "strict", flag, "nope", cwd=tmp_path).returncode == 0


def test_a_tilde_after_an_equals_sign_is_the_home_directory(tmp_path):
    """`--read=~/data`: the shell leaves the tilde, and the grant was called relative."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    p = sandbox("policy", "show", "strict", "--json", "--read=~/data",
                env={"HOME": str(home)})
    assert p.returncode == 0, p.stderr
    assert str(home / "data") in json.loads(p.stdout)["policy"]["filesystem"]["read"]


def test_the_locale_categories_pass_through():
    """LANG passed and LC_COLLATE did not, so `sort` ordered differently inside."""
    names = ("LANGUAGE", "LC_COLLATE", "LC_NUMERIC", "LC_TIME", "LC_MESSAGES")
    p = sandbox("exec", "--", "sh", "-c", " ".join(f'echo "${n}";' for n in names),
                env={n: "C" for n in names})
    assert p.stdout.split() == ["C"] * len(names), p.stderr


def test_a_reader_that_left_is_not_reported():
    """`sandbox exec ... | head`: the program dies of SIGPIPE, exit 141 as in a shell,
    and no line on stderr (a shell prints none either)."""
    p = subprocess.run(f"{sys.executable} -m sandbox exec -- yes | head -1; "
                       "echo \"rc=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                       capture_output=True, text=True, timeout=120)
    assert p.stdout == "y\nrc=141\n" and p.stderr == "", (p.stdout, p.stderr)


@pytest.mark.isolation
def test_read_and_write_grants_are_enforced(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("granted\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    for d in (tmp_path, outside, dest):
        d.chmod(0o777)
    (outside / "f.txt").chmod(0o644)
    work = tmp_path / "work"
    work.mkdir()
    script = f"cat {outside}/f.txt; echo made > {dest}/new"
    denied = sandbox("exec", "--", "sh", "-c", script, cwd=work)
    assert denied.returncode != 0 and "granted" not in denied.stdout
    assert not (dest / "new").exists()
    ok = sandbox("exec", "--read", str(outside), "--write", str(dest), "--", "sh", "-c", script,
                 cwd=work)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "granted\n" and (dest / "new").read_text() == "made\n"


@pytest.mark.isolation
def test_env_grants(tmp_path):
    show = "echo A=${A:-unset} B=${B:-unset}"
    base = sandbox("exec", "--", "sh", "-c", show, env={"A": "from-caller"})
    assert base.stdout == "A=unset B=unset\n"
    p = sandbox("exec", "--env", "A", "--env", "B=set-here", "--", "sh", "-c", show,
                env={"A": "from-caller"})
    assert p.stdout == "A=from-caller B=set-here\n", p.stderr
    short = sandbox("exec", "-e", "A", "-e", "B=set-here", "--", "sh", "-c", show,
                    env={"A": "from-caller"})   # -e, as docker run and podman take it
    assert short.stdout == p.stdout, short.stderr


@pytest.mark.isolation
def test_net_grant_brings_up_loopback():
    code = ("import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
            "socket.create_connection(s.getsockname()); print('connected')")
    none = sandbox("exec", "--net", "none", "--", sys.executable, "-I", "-c", code)
    assert "connected" not in none.stdout and none.returncode != 0
    lo = sandbox("exec", "--net", "loopback", "--", sys.executable, "-I", "-c", code)
    assert lo.stdout == "connected\n", lo.stderr


@pytest.mark.isolation
def test_wall_grant_limits_the_run(tmp_path):
    p = sandbox("exec", "--wall", "1s", "--result", str(tmp_path / "r.json"), "--", "sleep", "30")
    assert p.returncode == 124
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["status"] == "timeout" and r["policy"] == "default+grants"
