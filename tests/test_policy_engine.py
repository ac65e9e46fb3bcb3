"""The decision engine: pure, deny wins, globs, subtrees, `..`, sandbox areas."""
from __future__ import annotations

import gc

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import Engine, decide, engine_for, load_policy, parse_policy, resolve
from sandbox.policy.engine import OPERATIONS


def policy(text: str):
    return resolve(parse_policy(text), {"OUTPUT": "/out", "WORKDIR": "/work", "HOME": "/home/u",
                                        "PYTHON": ["/usr", "/opt/py"]})


P = policy("""
[filesystem]
read = ["/usr", "/etc", "/data/**/*.csv", "/srv/*/public"]
write = ["${OUTPUT}", "/data/scratch"]
exec = ["/usr/bin", "/opt/tools/bin"]
deny = ["/etc/shadow", "/etc/ssh/*key*", "/usr/lib/secret", "${OUTPUT}/.git", "/data/**/private.csv"]
""")


def allowed(op, path, pol=P, **kw):
    return decide(pol, op, path, **kw).allowed


@pytest.mark.parametrize("op,path,ok,rule", [
    ("read", "/etc/passwd", True, "filesystem.read: /etc"),
    ("read", "/etc", True, "filesystem.read: /etc"),
    ("metadata", "/etc/passwd", True, "filesystem.read: /etc"),
    ("write", "/etc/passwd", False, "default: not granted"),
    ("create", "/etc/new", False, "default: not granted"),
    ("read", "/etc/shadow", False, "filesystem.deny: /etc/shadow"),
    ("metadata", "/etc/shadow", False, "filesystem.deny: /etc/shadow"),
    ("read", "/etc/ssh/ssh_host_ed25519_key", False, "filesystem.deny: /etc/ssh/*key*"),
    ("read", "/etc/ssh/ssh_host_ed25519_key.pub", False, "filesystem.deny: /etc/ssh/*key*"),
    ("read", "/etc/ssh/sshd_config", True, "filesystem.read: /etc"),
    ("read", "/usr/lib/secret/a/b", False, "filesystem.deny: /usr/lib/secret"),   # deny covers subtree
    ("read", "/usr/lib/secretive", True, "filesystem.read: /usr"),               # not a path prefix
    ("exec", "/usr/bin/ls", True, "filesystem.exec: /usr/bin"),
    ("read", "/usr/bin/ls", True, "filesystem.exec: /usr/bin"),                  # deepest rule reported
    ("read", "/usr/lib/x", True, "filesystem.read: /usr"),
    ("exec", "/usr/lib/x.so", False, "default: not granted"),
    ("read", "/opt/tools/bin/t", True, "filesystem.exec: /opt/tools/bin"),       # exec implies read
    ("write", "/opt/tools/bin/t", False, "default: not granted"),
    ("write", "/out/result.json", True, "filesystem.write: /out"),
    ("create", "/out/new/deep/file", True, "filesystem.write: /out"),            # does not exist yet
    ("delete", "/out/x", True, "filesystem.write: /out"),
    ("read", "/out/x", True, "filesystem.write: /out"),                           # write implies read
    ("exec", "/out/x", False, "default: not granted"),                            # ... but not exec
    ("write", "/out", True, "filesystem.write: /out"),
    ("write", "/out/.git/config", False, "filesystem.deny: /out/.git"),           # deny inside allow
    ("read", "/outside", False, "default: not granted"),
    ("read", "/data/a/b/c.csv", True, "filesystem.read: /data/**/*.csv"),
    ("read", "/data/c.csv", True, "filesystem.read: /data/**/*.csv"),             # ** = zero segments too
    ("read", "/data/a/b/c.txt", False, "default: not granted"),
    ("read", "/data/a/private.csv", False, "filesystem.deny: /data/**/private.csv"),
    ("read", "/srv/site/public/index.html", True, "filesystem.read: /srv/*/public"),
    ("read", "/srv/a/b/public/x", False, "default: not granted"),                 # * does not cross /
    ("write", "/data/scratch/x", True, "filesystem.write: /data/scratch"),
])
def test_decisions(op, path, ok, rule):
    v = decide(P, op, path)
    assert (v.allowed, v.rule) == (ok, rule), v
    assert v.path == path and v.reason


def test_deepest_literal_rule_is_reported():
    p = policy('[filesystem]\nread = ["/a"]\nwrite = ["/a/b"]\n')
    assert decide(p, "read", "/a/b/c").rule == "filesystem.write: /a/b"
    assert decide(p, "read", "/a/c").rule == "filesystem.read: /a"
    # a read-only child under a writable parent is still writable: any allow wins
    q = policy('[filesystem]\nwrite = ["/a"]\nread = ["/a/ro"]\n')
    assert decide(q, "write", "/a/ro/x").rule == "filesystem.write: /a"


def test_not_granted_reason_names_the_covering_rule():
    v = decide(P, "write", "/usr/x")
    assert not v.allowed and "filesystem.read: /usr" in v.reason


@pytest.mark.parametrize("raw,norm,ok", [
    ("/out/../etc/shadow", "/etc/shadow", False),
    ("/etc/../out/x", "/out/x", True),
    ("/out/./a//b/", "/out/a/b", True),
    ("//etc/passwd", "/etc/passwd", True),
    ("/out/x/../../etc/passwd", "/etc/passwd", True),
    ("/../../etc/shadow", "/etc/shadow", False),
])
def test_dotdot_is_lexical(raw, norm, ok):
    v = decide(P, "read", raw)
    assert v.path == norm and v.allowed == ok


def test_resolve_link_is_applied_before_deciding():
    links = {"/out/link": "/etc/shadow", "/out/ok": "/usr/share/doc"}
    calls = []

    def resolve_link(path: str) -> str:
        calls.append(path)
        return links.get(path, path)

    v = decide(P, "read", "/out/link", resolve_link=resolve_link)
    assert not v.allowed and v.rule == "filesystem.deny: /etc/shadow" and v.path == "/etc/shadow"
    assert decide(P, "read", "/out/link").allowed        # lexically it is inside /out
    w = decide(P, "write", "/out/ok", resolve_link=resolve_link)
    assert not w.allowed and w.path == "/usr/share/doc"
    assert calls == ["/out/link", "/out/ok"]


def test_engine_is_pure(monkeypatch):
    import builtins
    import os

    def boom(*a, **k):
        raise AssertionError("the engine touched the system")

    for name in ("stat", "lstat", "open", "listdir", "scandir", "readlink", "access"):
        monkeypatch.setattr(os, name, boom)
    monkeypatch.setattr(builtins, "open", boom)
    monkeypatch.setattr(os.path, "realpath", boom)
    monkeypatch.setattr(os.path, "exists", boom)
    e = Engine(P)
    for op in OPERATIONS:
        for path in ("/etc/shadow", "/out/a", "/nope", "/tmp/x", "/dev/null", "/proc/self/maps"):
            e.decide(op, path)


def test_private_tmp():
    for op in ("read", "write", "create", "delete", "metadata"):
        v = decide(P, op, "/tmp/a/b")
        assert v.allowed and v.rule == "private /tmp"
    assert decide(P, "write", "/tmp").allowed
    v = decide(P, "exec", "/tmp/a.out")
    assert not v.allowed and v.rule == "private /tmp"


def test_deny_beats_private_tmp_and_dev():
    p = policy('[filesystem]\ndeny = ["/tmp/secret", "/dev/tty"]\n')
    assert decide(p, "write", "/tmp/secret/x").rule == "filesystem.deny: /tmp/secret"
    assert not decide(p, "read", "/dev/tty").allowed
    assert decide(p, "read", "/tmp/other").allowed


def test_host_path_bound_over_private_tmp_decides_alone():
    p = resolve(parse_policy('[filesystem]\nread = ["${WORKDIR}"]\nwrite = ["${OUTPUT}"]\n'),
                {"WORKDIR": "/tmp/run/in", "OUTPUT": "/tmp/run/out"})
    assert decide(p, "write", "/tmp/run/out/x").rule == "filesystem.write: /tmp/run/out"
    v = decide(p, "write", "/tmp/run/in/x")       # the host's read-only bind, not the tmpfs
    assert not v.allowed and "filesystem.read: /tmp/run/in" in v.reason
    assert decide(p, "write", "/tmp/run/elsewhere").rule == "private /tmp"
    # a rule that is not strictly inside /tmp never grants the host's /tmp
    q = policy('[filesystem]\nread = ["/"]\n')
    assert decide(q, "write", "/tmp/x").rule == "private /tmp"
    assert decide(q, "read", "/etc/passwd").rule == "filesystem.read: /"


def test_proc_and_dev():
    assert decide(P, "read", "/proc/self/status").rule == "sandbox: /proc"
    assert decide(P, "metadata", "/proc").allowed
    assert not decide(P, "write", "/proc/self/oom_score_adj").allowed
    for node in ("null", "zero", "full", "random", "urandom", "tty"):
        assert decide(P, "read", f"/dev/{node}").rule == f"sandbox: /dev/{node}"
        assert decide(P, "write", f"/dev/{node}").allowed
        assert not decide(P, "delete", f"/dev/{node}").allowed
    assert decide(P, "read", "/dev").allowed
    assert not decide(P, "read", "/dev/sda").allowed
    assert decide(P, "create", "/dev/shm/x").rule == "private /dev/shm"
    assert not decide(P, "exec", "/dev/shm/x").allowed
    assert decide(P, "write", "/dev/stdout").rule == "sandbox: /dev/stdout"
    assert decide(P, "write", "/dev/fd/1").rule == "sandbox: /dev/fd"
    assert not decide(P, "create", "/dev/fd/9").allowed
    assert not decide(P, "read", "/dev/fdx").allowed
    # a rule may add a host device strictly inside /dev
    p = policy('[filesystem]\nread = ["/dev/dri"]\n')
    assert decide(p, "read", "/dev/dri/card0").rule == "filesystem.read: /dev/dri"
    assert decide(p, "metadata", "/dev").allowed


def test_metadata_on_parent_directories():
    v = decide(P, "metadata", "/opt")
    assert v.allowed and v.rule == "sandbox: parent of filesystem.exec: /opt/tools/bin"
    assert decide(P, "metadata", "/opt/tools").allowed
    assert decide(P, "metadata", "/").allowed
    assert decide(P, "metadata", "/data").allowed            # glob's literal prefix
    # listing a directory of the view is granted (issue 13: `ls /`): it names only what
    # the view holds; nothing else about it is
    assert decide(P, "read", "/opt").allowed and decide(P, "read", "/").allowed
    for op in ("write", "create", "delete", "exec"):
        assert not decide(P, op, "/opt").allowed and not decide(P, op, "/").allowed
    assert not decide(P, "metadata", "/opt/other").allowed
    assert not decide(P, "read", "/opt/other").allowed


def test_empty_policy_denies_host_paths():
    p = policy("")
    assert not decide(p, "read", "/etc/passwd").allowed
    assert not decide(p, "metadata", "/etc").allowed
    assert decide(p, "write", "/tmp/x").allowed


def test_relative_path_is_denied_not_guessed():
    v = decide(P, "read", "etc/passwd")
    assert not v.allowed and "absolute" in v.rule


def test_unknown_operation_is_a_programming_error():
    with pytest.raises(ValueError):
        decide(P, "chmod", "/out/x")


def test_unresolved_policy_is_refused():
    with pytest.raises(PolicyError, match="resolved"):
        Engine(parse_policy('[filesystem]\nwrite = ["${OUTPUT}"]\n'))


def test_engine_cached_per_policy_object():
    p = policy('[filesystem]\nread = ["/x"]\n')
    assert engine_for(p) is engine_for(p)
    q = policy('[filesystem]\nread = ["/x"]\n')
    assert engine_for(q) is not engine_for(p)
    import sandbox.policy.engine as eng
    n = len(eng._engines)
    del p, q
    gc.collect()
    assert len(eng._engines) <= n - 2


def test_cache_does_not_change_answers():
    e = Engine(P)
    first = [e.decide(op, path) for op in OPERATIONS for path in ("/etc/shadow", "/out/x", "/usr/bin/x")]
    again = [e.decide(op, path) for op in OPERATIONS for path in ("/etc/shadow", "/out/x", "/usr/bin/x")]
    assert first == again


def test_builtin_strict_end_to_end():
    p = resolve(load_policy("strict"), {"WORKDIR": "/w", "OUTPUT": "/o", "HOME": "/root",
                                        "PYTHON": ["/usr"]})
    assert not decide(p, "read", "/etc/shadow").allowed
    assert not decide(p, "read", "/etc/sudoers.d/README").allowed
    assert decide(p, "read", "/etc/passwd").allowed
    assert decide(p, "exec", "/usr/bin/python3").allowed
    assert not decide(p, "write", "/w/x").allowed and decide(p, "read", "/w/x").allowed
    assert decide(p, "write", "/o/x").allowed
    assert not decide(p, "read", "/root/.ssh/id_rsa").allowed
