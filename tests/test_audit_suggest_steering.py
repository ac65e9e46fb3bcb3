"""`policy suggest` cannot be steered by the program it learns from (issue 10 finding 11).

The program chooses the names it opens; a learned policy must grant exactly
those names (glob characters escaped), never what the learning policy
refused, and keep every setting of the learning policy (limits, audit,
extends, ...): it may only drop grants.
"""
from __future__ import annotations

import json
import os

import pytest

from sandbox.audit.suggest import suggest
from sandbox.cli.main import main as cli
from sandbox.policy import decide, load_policy, parse_policy, resolve
from sandbox.policy.model import AuditPolicy


def rec(path, op="read", verdict="allowed", rule="filesystem.read: /srv"):
    return {"path": path, "operation": op, "verdict": verdict, "rule": rule}


def learned(text, tmp_path):
    pol = parse_policy(text, file=str(tmp_path / "learned.toml"))
    return resolve(pol, {"WORKDIR": str(tmp_path), "OUTPUT": str(tmp_path / "out"),
                         "HOME": str(tmp_path), "PYTHON": ["/usr"]})


def test_glob_characters_in_opened_names_are_literal(tmp_path):
    names = ["/srv/d1/*/secret*", "/srv/d2/id_?", "/srv/d3/[ab]x", "/srv/d4/**"]
    text, rules = suggest([rec(n) for n in names], workdir=None, output=None)
    pol = learned(text, tmp_path)
    for n in names:                               # exactly what was used stays granted
        assert decide(pol, "read", n).allowed, (n, text)
    for other in ("/srv/d1/bob/secret.txt", "/srv/d2/id_x", "/srv/d3/ax", "/srv/d4/anything"):
        assert not decide(pol, "read", other).allowed, (other, text)


def test_names_a_policy_cannot_spell_get_no_rule(tmp_path):
    names = ["/srv/a/${HOME}", "/srv/a/x\nwrite = [\"/\"]", "/srv/a/\udcff"]
    text, rules = suggest([rec(n) for n in names] + [rec("/srv/a/ok")], workdir=None, output=None)
    pol = learned(text, tmp_path)
    assert rules["read"] == ["/srv/a/ok"]
    assert not decide(pol, "write", "/etc/passwd").allowed


def test_never_grants_what_the_learning_policy_refused(tmp_path):
    recs = [rec(f"/srv/data/{n}.txt") for n in "abcd"]
    recs.append(rec("/srv/data/key.pem", verdict="denied", rule="filesystem.deny: /srv/data/*.pem"))
    recs.append(rec("/srv/data/private", verdict="denied", rule="default: not granted"))
    learning = resolve(parse_policy('extends = ["base"]\n[filesystem]\nread = ["/srv"]\n'
                                    'deny = ["/srv/data/*.pem"]\n[audit]\nfiles = "all"\n'),
                       {"WORKDIR": str(tmp_path), "OUTPUT": str(tmp_path), "HOME": str(tmp_path),
                        "PYTHON": ["/usr"]})
    text, rules = suggest(recs, workdir=None, output=None, learning=learning)
    pol = learned(text, tmp_path)
    assert "/srv/data" not in rules["read"], "collapsed over refused paths"
    assert all(decide(pol, "read", f"/srv/data/{n}.txt").allowed for n in "abcd")
    for refused in ("/srv/data/key.pem", "/srv/data/private", "/srv/data/later.pem"):
        assert not decide(pol, "read", refused).allowed, refused
    # without the learning policy, the refused paths still stop the collapse
    text, rules = suggest(recs, workdir=None, output=None)
    assert "/srv/data" not in rules["read"]


@pytest.mark.isolation
def test_a_learned_policy_keeps_limits_audit_and_extends(tmp_path, py, monkeypatch):
    from sandbox.launcher.launcher import Launcher
    monkeypatch.setenv("SANDBOX_AUDIT_DB", str(tmp_path / "audit"))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "f.txt").write_text("hello")
    src = tmp_path / "learn.toml"
    src.write_text('extends = ["strict"]\n[filesystem]\nread = ["%s"]\n'
                   '[limits]\nmemory = "300MiB"\n[audit]\nfiles = "all"\nrecords = 5000\n'
                   % extra)
    argv = [py, "-I", "-c", f"print(open({str(extra / 'f.txt')!r}).read())"]
    r = Launcher(capture_output=True).spawn(argv, policy=str(src), workdir=str(tmp_path))
    assert r.status == "ok" and r.stdout == "hello\n", (r.reason, r.stderr)
    out = tmp_path / "learned.toml"
    assert cli(["policy", "suggest", r.run_id[:12], "-o", str(out)]) == 0
    got = load_policy(str(out))
    want = load_policy(str(src))
    assert got.extends == ("strict",)
    assert got.limits == want.limits and got.limits.memory == 300 << 20
    assert got.audit == AuditPolicy(files="all", records=5000)
    assert got.network == want.network and got.syscalls == want.syscalls
    assert got.filesystem.tmp_size == want.filesystem.tmp_size
    # and it still runs the program
    again = Launcher(capture_output=True).spawn(argv, policy=str(out), workdir=str(tmp_path))
    assert again.status == "ok" and again.stdout == "hello\n", (again.reason, again.stderr)
