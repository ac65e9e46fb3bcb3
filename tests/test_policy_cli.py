"""`sandbox policy check|explain|show` through the real entry point (subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args: str, cwd: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "sandbox", "policy", *args], capture_output=True,
                          text=True, cwd=cwd or REPO, env=full_env, timeout=60)


@pytest.mark.parametrize("name", ["base", "strict", "build", "default", "spawn_process", "spawn_middleware"])
def test_check_builtins(name):
    r = run("check", name)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line and line.startswith(f"ok: {name}: ")
    assert "network" in line and "syscalls" in line and "limits" in line


def test_check_summary_content():
    r = run("check", "strict")
    assert "network none" in r.stdout and "syscalls default" in r.stdout
    assert "wall=1m" in r.stdout and "memory=512MiB" in r.stdout


@pytest.mark.parametrize("files,noted", [("none", True), ("denied", False), ("all", False)])
def test_check_notes_that_without_audit_a_deny_holds_by_mounts_alone(tmp_path, files, noted):
    """A known limit (docs/threat-model.md): the kernel detaches a mask whose file the
    host replaces; only the engine's per-call check refuses it then."""
    f = tmp_path / "p.toml"
    f.write_text(f'extends = ["strict"]\n[filesystem]\ndeny = ["/etc/hostname"]\n'
                 f'[audit]\nfiles = "{files}"\n')
    r = run("check", str(f))
    assert r.returncode == 0 and r.stdout.startswith("ok: ")
    assert ("sandbox: note: [audit] files = \"none\"" in r.stderr) == noted, r.stderr
    data = json.loads(run("check", "--json", str(f)).stdout)
    assert bool(data["notes"]) == noted


def test_check_file_path(tmp_path):
    f = tmp_path / "ok.toml"
    f.write_text('extends = ["strict"]\n[network]\nmode = "loopback"\n')
    r = run("check", str(f))
    assert r.returncode == 0 and "network loopback" in r.stdout


def test_check_bad_file_exit_2_with_located_errors(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[limits]\nmemory = "lots"\n\n[filesystem]\nread = ["relative"]\n')
    r = run("check", str(f))
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert lines[0] == f"sandbox: error: {f}:2: limits.memory: " + lines[0].split("limits.memory: ", 1)[1]
    assert f"{f}:5: filesystem.read:" in lines[1]


def test_check_json(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[syscalls]\nallow = ["no_such_call"]\n')
    r = run("check", "--json", str(f))
    assert r.returncode == 2
    data = json.loads(r.stdout)
    assert data["ok"] is False
    assert data["errors"][0]["line"] == 2 and data["errors"][0]["key"] == "syscalls.allow"
    ok = json.loads(run("check", "--json", "strict").stdout)
    assert ok["ok"] is True and ok["policy_data"]["limits"]["memory"] == 512 << 20


def test_check_unknown_policy():
    r = run("check", "no_such_policy_name")
    assert r.returncode == 2 and "no_such_policy_name" in r.stderr


def test_explain_denied_and_allowed():
    r = run("explain", "strict", "read", "/etc/shadow")
    assert r.returncode == 1
    assert r.stdout.startswith("denied: read /etc/shadow")
    assert "rule:   filesystem.deny: /etc/shadow*" in r.stdout
    r = run("explain", "strict", "read", "/etc/passwd")
    assert r.returncode == 0 and "filesystem.read: /etc" in r.stdout


def test_explain_uses_output_and_workdir(tmp_path):
    r = run("explain", "strict", "write", "out/x", "--output", "out", cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"filesystem.write: {os.path.realpath(tmp_path)}/out" in r.stdout
    r = run("explain", "strict", "write", "x", cwd=str(tmp_path))     # WORKDIR = cwd: read only
    assert r.returncode == 1 and f"filesystem.read: {tmp_path}" in r.stdout
    r = run("explain", "strict", "write", "output/x", cwd=str(tmp_path))   # OUTPUT = ./output
    assert r.returncode == 0


def test_explain_canonicalises_symlinks(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/etc/shadow")
    r = run("explain", "--json", "strict", "read", str(link), cwd=str(tmp_path))
    data = json.loads(r.stdout)
    assert r.returncode == 1 and data["allowed"] is False
    assert data["absolute"] == str(link) and data["canonical"] == "/etc/shadow"
    assert data["rule"] == "filesystem.deny: /etc/shadow*"
    text = run("explain", "strict", "read", str(link), cwd=str(tmp_path)).stdout
    assert f"{link} -> /etc/shadow" in text


def test_explain_bad_operation():
    r = run("explain", "strict", "chmod", "/x")
    assert r.returncode == 2


def test_show_toml_round_trips(tmp_path):
    r = run("show", "strict", "--output", str(tmp_path / "o"), "--workdir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    import tomllib
    fs = tomllib.loads(r.stdout)["filesystem"]
    assert not any("${" in p for k in ("read", "write", "exec", "deny") for p in fs[k])
    assert str(tmp_path / "o") in fs["write"]
    flat = tmp_path / "flat.toml"
    flat.write_text(r.stdout)
    sys.path.insert(0, REPO)
    from sandbox.policy import default_variables, load_policy, resolve
    original = resolve(load_policy("strict"), default_variables(str(tmp_path), str(tmp_path / "o")))
    again = load_policy(str(flat))
    assert again.replace(source=None) == original.replace(source=None)


def test_show_raw_json_and_plan(tmp_path):
    raw = json.loads(run("show", "--raw", "--json", "default").stdout)
    assert "${OUTPUT}" in raw["policy"]["filesystem"]["write"]
    (tmp_path / "o").mkdir()
    data = json.loads(run("show", "--json", "--plan", "default", "--output", str(tmp_path / "o")).stdout)
    assert "/etc/shadow" in data["plan"]["masks"]
    assert any(r["path"] == str(tmp_path / "o") and r["write"] for r in data["plan"]["rules"])


def test_policy_without_action_is_usage_error():
    assert run().returncode == 2


def test_extra_policy_actions_plug_in(monkeypatch):
    """A module sandbox/cli/policy_<name>_cmd.py adds `sandbox policy <name>`."""
    import types

    from sandbox.cli import main as cli_main

    fake = types.ModuleType("sandbox.cli.policy_suggest_cmd")

    def register(actions):
        p = actions.add_parser("suggest")
        p.set_defaults(func=lambda args: 42)

    fake.register = register
    monkeypatch.setitem(sys.modules, "sandbox.cli.policy_suggest_cmd", fake)
    assert cli_main.main(["policy", "suggest"]) == 42


def test_list_names_every_policy_with_its_description_and_file(tmp_path):
    """`sandbox policy list` (everyday probe 3, E5: a new user's first question was an
    argparse error): every name `--policy` takes, its description and where it is; a
    policy of SANDBOX_POLICY_PATH that does not load is listed with its error, not fatal."""
    (tmp_path / "mine.toml").write_text('name = "mine"\ndescription = "my own"\n'
                                        'extends = ["strict"]\n')
    (tmp_path / "broken.toml").write_text("this is not toml = = \n")
    r = run("list", env={"SANDBOX_POLICY_PATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line for line in r.stdout.splitlines()}
    from sandbox.policy import available_policies, load_policy
    for name in ("base", "strict", "default", "build"):
        assert load_policy(name).description in rows[name], r.stdout
        assert available_policies()[name] in rows[name], r.stdout
    assert "my own" in rows["mine"] and str(tmp_path / "mine.toml") in rows["mine"]
    assert "does not load" in rows["broken"], r.stdout
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == sorted(names)
    j = run("list", "--json", env={"SANDBOX_POLICY_PATH": str(tmp_path)})
    listed = {p["name"]: p for p in json.loads(j.stdout)}
    assert listed["strict"]["description"] == load_policy("strict").description
    assert listed["broken"]["error"] and listed["mine"]["file"] == str(tmp_path / "mine.toml")
