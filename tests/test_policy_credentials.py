"""Built-in policies do not hand out credential stores (issue 10 finding 8).

Judged from the host: a fake home holds canary credential files; a program
run with that home as its work directory (``sandbox run`` from ~) and as
``$HOME`` tries to read each, and the canaries must not appear in what it
printed. Files next to them stay readable. A policy may opt back in by name,
and ``sandbox policy explain`` names the rule.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox.launcher.launcher import Launcher
from sandbox.policy import decide, load_policy, parse_policy, resolve
from sandbox.policy import credentials

CANARIES = {
    ".ssh/id_ed25519": "CANARY-ssh", ".ssh/id_rsa": "CANARY-rsa",
    ".aws/credentials": "CANARY-aws", ".netrc": "CANARY-netrc",
    ".git-credentials": "CANARY-git", ".docker/config.json": "CANARY-docker",
    ".kube/config": "CANARY-kube", ".gnupg/private-keys-v1.d/k.key": "CANARY-gpg",
    ".config/gcloud/credentials.db": "CANARY-gcloud", ".azure/accessTokens.json": "CANARY-azure",
    ".pgpass": "CANARY-pgpass", ".npmrc": "CANARY-npm", ".pypirc": "CANARY-pypi",
    ".config/gh/hosts.yml": "CANARY-gh",
}
PLAIN = {"notes.txt": "plain-notes", ".bashrc": "plain-bashrc", ".config/app.ini": "plain-app"}


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    for rel, text in {**CANARIES, **PLAIN}.items():
        p = home / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
    os.chmod(tmp_path, 0o755)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SANDBOX_HOME", str(tmp_path / "state"))
    return home


def _reader(home):
    # cat every file under the home it can see, by name and by a recursive walk
    names = " ".join(f"'{home}/{rel}'" for rel in {**CANARIES, **PLAIN})
    return ["/bin/sh", "-c", f"cat {names} 2>/tmp/err1; "
            f"find '{home}' -type f -exec cat {{}} + 2>/tmp/err2; exit 0"]


@pytest.mark.isolation
@pytest.mark.parametrize("policy", ["strict", "default"])
def test_builtins_hide_credential_stores_under_a_granted_home(fake_home, policy):
    r = Launcher(capture_output=True).spawn(_reader(fake_home), policy=policy,
                                            workdir=str(fake_home))
    assert r.status == "ok", (r.reason, r.stderr)
    leaked = sorted(c for c in CANARIES.values() if c in (r.stdout or ""))
    assert leaked == [], f"credential canaries readable under {policy}"
    for text in PLAIN.values():             # the rest of the home is still readable
        assert text in r.stdout


@pytest.mark.isolation
def test_a_policy_opts_back_in_by_name(fake_home, tmp_path):
    pol = tmp_path / "aws.toml"
    pol.write_text('extends = ["strict"]\n[filesystem]\nallow_credentials = [".aws"]\n')
    r = Launcher(capture_output=True).spawn(_reader(fake_home), policy=str(pol),
                                            workdir=str(fake_home))
    assert r.status == "ok", (r.reason, r.stderr)
    assert "CANARY-aws" in r.stdout
    assert [c for c in CANARIES.values() if c in r.stdout] == ["CANARY-aws"]


def test_explain_names_the_credential_rule(fake_home):
    cmd = [sys.executable, "-m", "sandbox", "policy", "explain", "default", "read",
           str(fake_home / ".ssh/id_rsa"), "--workdir", str(fake_home), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
    assert out.returncode == 1, out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["allowed"] is False
    assert verdict["rule"].startswith("credentials: ") and "allow_credentials" in verdict["rule"]


def _vars(home, workdir):
    return {"WORKDIR": str(workdir), "OUTPUT": str(workdir) + "/out", "HOME": str(home),
            "PYTHON": ["/usr"]}


def test_stores_are_denied_wherever_a_granted_tree_holds_a_home(tmp_path, monkeypatch):
    """A grant of a parent of homes (/home as the work directory) reaches every user's
    stores: each home of the passwd database counts, and files created later in a
    store too."""
    homes = tmp_path / "homes"
    for user in ("ann", "bob"):
        (homes / user / ".ssh").mkdir(parents=True)
    monkeypatch.setattr(credentials, "_passwd_homes",
                        lambda: (str(homes / "ann"), str(homes / "bob")))
    policy = resolve(load_policy("strict"), _vars(tmp_path / "me", homes))
    for user in ("ann", "bob"):
        v = decide(policy, "read", f"{homes}/{user}/.ssh/id_ed25519")   # does not exist yet
        assert not v.allowed and v.rule.startswith("credentials:"), v
        assert decide(policy, "read", f"{homes}/{user}/notes.txt").allowed
    # a home no grant reaches adds no rule
    unrelated = resolve(load_policy("strict"), _vars(tmp_path / "me", tmp_path / "w"))
    assert not any(str(homes) in d for d in unrelated.filesystem.deny)


def test_a_nested_child_cannot_opt_in_beyond_its_parent(tmp_path):
    from sandbox.errors import PolicyError
    from sandbox.policy.confine import confine
    home = tmp_path / "h"
    (home / ".aws").mkdir(parents=True)
    v = _vars(home, home)
    parent = resolve(load_policy("strict"), v)
    child = resolve(parse_policy('extends = ["strict"]\n[filesystem]\n'
                                 'allow_credentials = ["*"]\n'), v)
    derived = confine(child, parent)     # derived: the parent's opt-ins only (none)
    assert derived.filesystem.allow_credentials == ()
    assert not decide(derived, "read", f"{home}/.aws/credentials").allowed
    with pytest.raises(PolicyError):
        parse_policy('[filesystem]\nallow_credentials = ["~/.ssh"]\n')
