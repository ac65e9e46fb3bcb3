"""Loader: happy paths, every validation error located (file, key, line), extends."""
from __future__ import annotations

import os
import textwrap

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import load_policy, parse_policy
from sandbox.policy.search import available_policies, builtin_dir, default_search_path

BUILTINS = ("base", "strict", "default", "spawn_process", "spawn_middleware")


def write(path, text: str) -> str:
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(text: str, file: str = "p.toml", **kw) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        parse_policy(textwrap.dedent(text), file=file, **kw)
    return info.value


def test_empty_policy_has_documented_defaults():
    p = parse_policy("")
    assert p.name == "unnamed" and p.best_effort is False
    assert p.filesystem.read == () and p.filesystem.tmp_size == 64 * 1024 * 1024
    assert p.network.mode == "none"
    assert p.limits.memory is None and p.limits.wall is None
    assert p.syscalls.profile == "default" and p.syscalls.on_violation == "errno"
    assert p.audit.files == "none" and p.env.keep == ()


def test_full_policy_parses_every_key():
    p = parse_policy(textwrap.dedent("""
        name = "full"
        description = "all keys"
        best_effort = true
        [filesystem]
        read = ["/usr", "${WORKDIR}/in", "/etc/**/*.conf"]
        write = ["${OUTPUT}"]
        exec = ["/usr/bin"]
        deny = ["/etc/shadow"]
        tmp_size = "16MiB"
        [network]
        mode = "loopback"
        [limits]
        cpu = 1.5
        wall = "2m"
        memory = "256MiB"
        file_size = 4096
        processes = 10
        open_files = 64
        [syscalls]
        profile = "strict"
        allow = ["ptrace"]
        deny = ["mount"]
        on_violation = "kill"
        [audit]
        files = "all"
        [env]
        keep = ["PATH"]
        set = { LANG = "C.UTF-8" }
    """), file="full.toml")
    assert p.name == "full" and p.best_effort is True
    assert p.filesystem.read == ("/usr", "${WORKDIR}/in", "/etc/**/*.conf")
    assert p.filesystem.tmp_size == 16 << 20
    assert p.network.mode == "loopback"
    assert (p.limits.cpu, p.limits.wall, p.limits.memory, p.limits.file_size) == (1.5, 120.0, 256 << 20, 4096)
    assert (p.limits.processes, p.limits.open_files) == (10, 64)
    assert p.syscalls.allow == ("ptrace",) and p.syscalls.deny == ("mount",)
    assert p.syscalls.on_violation == "kill" and p.audit.files == "all"
    assert p.env.set == {"LANG": "C.UTF-8"} and p.source == "full.toml"


def test_to_dict_round_trip():
    p = load_policy("strict")
    from sandbox.policy.model import Policy
    assert Policy.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_load_and_are_strict_about_secrets(name):
    p = load_policy(name)
    assert p.name == name
    assert p.network.mode in ("none", "loopback")
    assert "/etc/shadow*" in p.filesystem.deny and "/etc/sudoers*" in p.filesystem.deny


def test_strict_limits_and_writes():
    p = load_policy("strict")
    assert p.filesystem.write == ("${OUTPUT}",)
    assert p.limits.wall == 60 and p.limits.memory == 512 << 20
    assert p.limits.processes == 256 and p.limits.open_files == 256 and p.limits.file_size == 64 << 20
    assert p.network.mode == "none" and p.best_effort is False


def test_file_name_is_default_name(tmp_path):
    f = write(tmp_path / "mine.toml", '[network]\nmode = "host"\n')
    assert load_policy(f).name == "mine"


# -- validation errors: each names the file, the key path and the line -----------------

@pytest.mark.parametrize("text,key,line,words", [
    ('name = "x"\n[limits]\nmemroy = "1G"\n', "limits.memroy", 3, "unknown key"),
    ('[limit]\nmemory = "1G"\n', "limit", 1, "unknown key"),
    ('\n\ncolour = "blue"\n', "colour", 3, "unknown key"),
    ('[limits]\nwall = "10s"\nmemory = "lots"\n', "limits.memory", 3, "bad size"),
    ('[limits]\nmemory = 0\n', "limits.memory", 2, "greater than zero"),
    ('[limits]\nmemory = "12kB"\n', "limits.memory", 2, "bad size"),
    ('[limits]\ncpu = "10 parsecs"\n', "limits.cpu", 2, "bad duration"),
    ('[limits]\ncpu = -1\n', "limits.cpu", 2, "greater than zero"),
    ('[limits]\nprocesses = true\n', "limits.processes", 2, "positive integer"),
    ('[limits]\nopen_files = 1.5\n', "limits.open_files", 2, "positive integer"),
    ('[limits]\nprocesses = 0\n', "limits.processes", 2, "positive integer"),
    ('best_effort = "yes"\n', "best_effort", 1, "true or false"),
    ('name = 3\n', "name", 1, "string"),
    ('[network]\nmode = "internet"\n', "network.mode", 2, "one of"),
    ('[audit]\nfiles = "some"\n', "audit.files", 2, "one of"),
    ('[syscalls]\non_violation = "log"\n', "syscalls.on_violation", 2, "one of"),
    ('[syscalls]\nprofile = "lax"\n', "syscalls.profile", 2, "one of"),
    ('[syscalls]\nallow = ["read", "frobnicate"]\n', "syscalls.allow", 2, "unknown syscall"),
    ('[syscalls]\nallow = ["ptrace"]\ndeny = ["ptrace"]\n', "syscalls.allow", 2, "both"),
    ('[filesystem]\nread = [\n  "/usr",\n  "home/me",\n]\n', "filesystem.read", 4, "relative"),
    ('[filesystem]\nwrite = ["${OUTPT}/x"]\n', "filesystem.write", 2, "unknown variable"),
    ('[filesystem]\nwrite = ["/a/${OUTPUT"]\n', "filesystem.write", 2, "unterminated"),
    ('[filesystem]\nread = "/usr"\n', "filesystem.read", 2, 'write read = ["/usr"]'),
    ('[filesystem]\nread = [1]\n', "filesystem.read", 2, "string"),
    ('[filesystem]\ndeny = [""]\n', "filesystem.deny", 2, "empty"),
    ('[filesystem]\ntmp_size = "1 bucket"\n', "filesystem.tmp_size", 2, "bad size"),
    ('[filesystem]\nwrite = ["/tmp"]\n', "filesystem.write", 2, "private /tmp"),
    ('[filesystem]\nread = ["/proc/1/environ"]\n', "filesystem.read", 2, "/proc"),
    ('[filesystem]\nread = ["/dev"]\n', "filesystem.read", 2, "/dev"),
    ('[env]\nkeep = ["NOT-A-NAME"]\n', "env.keep", 2, "environment variable"),
    ('[env]\nset = { A = 1 }\n', "env.set.A", 2, "string"),
    ('[env.set]\nB = "ok"\nA = 1\n', "env.set.A", 3, "string"),
    ('network = "none"\n', "network", 1, "table"),
    ('extends = "base"\n', "extends", 1, 'write extends = ["base"]'),
    ('limits.memory = "x"\n', "limits.memory", 1, "bad size"),
    ('name = "n"\nlimits = { wall = "1s", memory = "x" }\n', "limits.memory", 2, "bad size"),
    ('[filesystem]\n"read" = ["rel"]\n', "filesystem.read", 2, "relative"),
])
def test_validation_errors_are_located(text, key, line, words):
    err = error_of(text)
    assert err.file == "p.toml"
    assert err.key == key
    assert err.line == line, str(err)
    assert words in str(err)
    assert str(err).startswith(f"p.toml:{line}: {key}: ")


def test_a_directory_given_as_the_policy_says_so(tmp_path):
    with pytest.raises(PolicyError, match="is a directory, not a policy file"):
        load_policy(str(tmp_path))


def test_toml_syntax_error_has_line():
    err = error_of('name = "x"\n[limits\nmemory = 1\n')
    assert err.line == 2 and "invalid TOML" in str(err)


def test_all_errors_collected():
    err = error_of('[limits]\nmemory = "x"\nwall = "y"\n[bogus]\n')
    keys = [e.key for e in err.errors]
    assert keys == ["limits.memory", "limits.wall", "bogus"]
    assert [e.line for e in err.errors] == [2, 3, 4]


def test_unlimited_is_explicit_and_overrides_parent(tmp_path):
    write(tmp_path / "parent.toml", '[limits]\nmemory = "1G"\nwall = "10s"\n')
    f = write(tmp_path / "child.toml", 'extends = ["./parent.toml"]\n[limits]\nmemory = "unlimited"\n')
    p = load_policy(f)
    assert p.limits.memory is None and p.limits.wall == 10
    # tmp_size is a size, not a limit: "unlimited" is refused there
    assert error_of('[filesystem]\ntmp_size = "unlimited"\n').key == "filesystem.tmp_size"


# -- extends --------------------------------------------------------------------------------

def test_extends_merges_lists_and_overrides_scalars(tmp_path):
    write(tmp_path / "a.toml", """
        name = "a"
        description = "parent"
        [filesystem]
        read = ["/usr", "/etc"]
        deny = ["/etc/shadow"]
        [limits]
        memory = "1G"
        processes = 10
        [env]
        keep = ["PATH"]
        set = { A = "1", B = "1" }
    """)
    write(tmp_path / "b.toml", """
        [filesystem]
        read = ["/opt", "/usr"]
        [limits]
        processes = 20
    """)
    f = write(tmp_path / "c.toml", """
        extends = ["a.toml", "./b.toml"]
        [filesystem]
        read = ["/srv"]
        write = ["${OUTPUT}"]
        [limits]
        processes = 30
        [env]
        set = { B = "2" }
    """)
    p = load_policy(f)
    assert p.name == "c" and p.description == ""          # name/description are the file's own
    assert p.filesystem.read == ("/usr", "/etc", "/opt", "/srv")
    assert p.filesystem.deny == ("/etc/shadow",)           # a parent's deny is never lost
    assert p.filesystem.write == ("${OUTPUT}",)
    assert p.limits.memory == 1 << 30 and p.limits.processes == 30
    assert p.env.keep == ("PATH",) and p.env.set == {"A": "1", "B": "2"}


def test_syscall_deny_in_chain_beats_allow(tmp_path):
    write(tmp_path / "p.toml", '[syscalls]\ndeny = ["ptrace"]\n')
    f = write(tmp_path / "c.toml", 'extends = ["p.toml"]\n[syscalls]\nallow = ["ptrace", "personality"]\n')
    p = load_policy(f)
    assert p.syscalls.deny == ("ptrace",) and p.syscalls.allow == ("personality",)


def test_extends_builtin_by_name(tmp_path):
    f = write(tmp_path / "mine.toml", 'extends = ["strict"]\n[network]\nmode = "loopback"\n')
    p = load_policy(f)
    assert p.network.mode == "loopback" and p.limits.memory == 512 << 20
    assert "/etc/shadow*" in p.filesystem.deny and "${OUTPUT}" in p.filesystem.write


def test_extends_unknown_name_is_located(tmp_path):
    f = write(tmp_path / "x.toml", '# hi\nextends = ["base", "nosuchpolicy"]\n')
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    e = info.value
    assert e.file == f and e.key == "extends" and e.line == 2 and "nosuchpolicy" in str(e)


def test_extends_missing_file(tmp_path):
    f = write(tmp_path / "x.toml", 'extends = ["./missing.toml"]\n')
    with pytest.raises(PolicyError, match="not found") as info:
        load_policy(f)
    assert info.value.line == 1


@pytest.mark.parametrize("layout", ["self", "pair", "triangle"])
def test_extends_cycles_are_errors(tmp_path, layout):
    if layout == "self":
        write(tmp_path / "a.toml", 'extends = ["a.toml"]\n')
    elif layout == "pair":
        write(tmp_path / "a.toml", 'extends = ["b.toml"]\n')
        write(tmp_path / "b.toml", 'extends = ["a.toml"]\n')
    else:
        write(tmp_path / "a.toml", 'extends = ["b.toml"]\n')
        write(tmp_path / "b.toml", 'extends = ["c.toml"]\n')
        write(tmp_path / "c.toml", '\nextends = ["a.toml"]\n')
    with pytest.raises(PolicyError, match="cycle") as info:
        load_policy(str(tmp_path / "a.toml"))
    assert info.value.key == "extends" and info.value.line in (1, 2)


def test_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path / "root.toml", '[filesystem]\ndeny = ["/secret"]\n')
    write(tmp_path / "l.toml", 'extends = ["root.toml"]\n[filesystem]\nread = ["/l"]\n')
    write(tmp_path / "r.toml", 'extends = ["root.toml"]\n[filesystem]\nread = ["/r"]\n')
    p = load_policy(write(tmp_path / "top.toml", 'extends = ["l.toml", "r.toml"]\n'))
    assert p.filesystem.read == ("/l", "/r") and p.filesystem.deny == ("/secret",)


def test_error_in_parent_names_the_parent(tmp_path):
    parent = write(tmp_path / "parent.toml", '[limits]\n\nwall = "soon"\n')
    f = write(tmp_path / "child.toml", 'extends = ["parent.toml"]\n')
    with pytest.raises(PolicyError) as info:
        load_policy(f)
    assert info.value.file == parent and info.value.line == 3 and info.value.key == "limits.wall"


# -- search path ----------------------------------------------------------------------------

def test_builtin_dir_holds_the_builtins():
    assert set(BUILTINS) <= set(available_policies([builtin_dir()]))


def test_search_path_env_and_user_dir(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    monkeypatch.setenv("SANDBOX_POLICY_PATH", f"{a}::{b}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    path = default_search_path()
    assert path[:3] == [str(a), str(b), str(tmp_path / "cfg" / "sandbox" / "policies")]
    assert path[-1] == builtin_dir()
    write(b / "only_b.toml", '[network]\nmode = "host"\n')
    assert load_policy("only_b").network.mode == "host"


def test_shadowing_builtin_may_extend_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_POLICY_PATH", str(tmp_path))
    write(tmp_path / "strict.toml", 'extends = ["strict"]\n[limits]\nwall = "5s"\n')
    p = load_policy("strict")
    assert p.limits.wall == 5 and p.limits.memory == 512 << 20
    assert p.source == str(tmp_path / "strict.toml")


def test_unknown_name_lists_known(monkeypatch, tmp_path):
    monkeypatch.setenv("SANDBOX_POLICY_PATH", str(tmp_path))
    with pytest.raises(PolicyError, match="strict"):
        load_policy("nope")


def test_explicit_search_path(tmp_path):
    write(tmp_path / "strict.toml", 'name = "not the builtin"\n')
    assert load_policy("strict", search_path=[str(tmp_path)]).name == "not the builtin"
    with pytest.raises(PolicyError):
        load_policy("default", search_path=[str(tmp_path)])


def test_name_vs_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "strict.toml", 'name = "local file"\n')
    assert load_policy("strict").name == "strict"            # a name: search path
    assert load_policy("strict.toml").name == "local file"   # ends with .toml: a file
    assert load_policy("./strict.toml").name == "local file"
    with pytest.raises(PolicyError, match="not found"):
        load_policy("./missing.toml")


def test_parse_policy_base_dir(tmp_path):
    write(tmp_path / "p.toml", '[network]\nmode = "host"\n')
    p = parse_policy('extends = ["p.toml"]\n', base_dir=str(tmp_path))
    assert p.network.mode == "host"


def test_unreadable_file(tmp_path):
    f = tmp_path / "bin.toml"
    f.write_bytes(b"name = \"\xff\"\n")
    with pytest.raises(PolicyError, match="cannot read") as info:
        load_policy(str(f))
    assert info.value.file == str(f)
    assert os.path.exists(f)
