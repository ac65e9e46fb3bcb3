"""`[filesystem] scratch_exec`: one writable and executable scratch area, the private /tmp.

Judged from the host: the RunResult of real runs (exit codes, output), and the
policy loader's errors. `default` turns it on (compile-and-run, venvs, console
scripts, C extensions); `strict` keeps nothing writable executable, in both the
mount flags and Landlock, and no other writable place becomes executable.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

import pytest

from sandbox.errors import PolicyError
from sandbox.policy import load_policy, parse_policy, resolve
from sandbox.policy.compare import differences
from sandbox.policy.confine import derive
from sandbox.policy.variables import default_variables

pytestmark = pytest.mark.isolation

# A script copied to /tmp, made executable and run: the shortest "build and run".
RUN_FROM_TMP = ('cp /bin/true /tmp/t && chmod +x /tmp/t && /tmp/t && echo ran; '
                'printf "#!/bin/sh\\necho script-ran\\n" > /tmp/s.sh && chmod +x /tmp/s.sh && /tmp/s.sh')


def test_builtin_defaults():
    assert load_policy("default").filesystem.scratch_exec is True
    assert load_policy("strict").filesystem.scratch_exec is False
    assert load_policy("base").filesystem.scratch_exec is False


def test_default_runs_what_it_wrote_to_tmp(launcher):
    r = launcher.spawn(["sh", "-c", RUN_FROM_TMP], policy="default")
    assert (r.status, r.stdout) == ("ok", "ran\nscript-ran\n"), (r.reason, r.stderr)


def test_strict_refuses_to_run_what_it_wrote(launcher):
    r = launcher.spawn(["sh", "-c", RUN_FROM_TMP], policy="strict")
    assert "ran" not in r.stdout
    assert r.exit_code == 126 and "Permission denied" in r.stderr, (r.status, r.stderr)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (scripts/install.sh)")
def test_a_compiled_program_and_a_shared_object_load_from_tmp(launcher, tmp_path):
    """C extensions: a .so written to /tmp must map with PROT_EXEC (the
    'failed to map segment from shared object' of a noexec mount)."""
    src = tmp_path / "m.c"
    src.write_text('#include <stdio.h>\n#include <dlfcn.h>\n'
                   'int main(void){void *h = dlopen("/tmp/lib.so", RTLD_NOW);'
                   'if(!h){puts(dlerror());return 1;} int (*f)(void) = dlsym(h, "f");'
                   'printf("%d\\n", f()); return 0;}\n')
    (tmp_path / "lib.c").write_text("int f(void){return 42;}\n")
    os.chmod(tmp_path, 0o755)
    script = ("gcc -shared -fPIC -o /tmp/lib.so lib.c && gcc -o /tmp/m m.c -ldl && /tmp/m")
    r = launcher.spawn(["sh", "-c", script], policy="default", workdir=str(tmp_path))
    assert (r.status, r.stdout) == ("ok", "42\n"), (r.reason, r.stderr)


def test_scratch_exec_makes_nothing_else_executable(launcher, tmp_path):
    """Only /tmp: /dev/shm and the output directory stay noexec, and setuid stays
    inert in /tmp (nosuid on the tmpfs, no_new_privs on the process)."""
    out = tmp_path / "out"
    out.mkdir()
    script = ("cp /bin/true /dev/shm/t && chmod +x /dev/shm/t; /dev/shm/t && echo shm-ran; "
              "cp /bin/true \"$SANDBOX_OUTPUT/t\" && chmod +x \"$SANDBOX_OUTPUT/t\"; "
              "\"$SANDBOX_OUTPUT/t\" && echo out-ran; "
              "grep -E ' /tmp ' /proc/self/mountinfo; grep NoNewPrivs /proc/self/status")
    r = launcher.spawn(["sh", "-c", script], policy="default", output_dir=str(out))
    assert "shm-ran" not in r.stdout and "out-ran" not in r.stdout, r.stdout
    tmp_line = next(line for line in r.stdout.splitlines() if " /tmp " in line)
    assert "nosuid" in tmp_line and "noexec" not in tmp_line, tmp_line
    assert "NoNewPrivs:\t1" in r.stdout


def test_the_engine_agrees_with_the_kernel():
    variables = default_variables("/nonexistent-work", "/nonexistent-out")
    from sandbox.policy import decide
    d = decide(resolve(load_policy("default"), variables), "exec", "/tmp/a.out")
    s = decide(resolve(load_policy("strict"), variables), "exec", "/tmp/a.out")
    assert (d.allowed, d.rule) == (True, "filesystem.scratch_exec")
    assert not s.allowed and "filesystem.scratch_exec" in s.reason


# -- loud refusals of a contradictory policy -----------------------------------------

@pytest.mark.parametrize("deny, line", [('"/tmp"', 3), ('"/tmp/**"', 3), ('"/"', 3),
                                         ('"/t*"', 3)])
def test_a_deny_of_the_scratch_area_contradicts_scratch_exec(deny, line):
    text = f'[filesystem]\nscratch_exec = true\ndeny = [{deny}]\n'
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, file="p.toml")
    assert exc.value.line == line and exc.value.key == "filesystem.deny", str(exc.value)
    assert "scratch_exec" in str(exc.value) and str(exc.value).startswith(f"p.toml:{line}:")


def test_a_deny_of_one_file_in_tmp_is_no_contradiction():
    p = parse_policy('[filesystem]\nscratch_exec = true\ndeny = ["/tmp/*.key"]\n')
    assert p.filesystem.scratch_exec


def test_denying_execve_contradicts_scratch_exec():
    with pytest.raises(PolicyError) as exc:
        parse_policy('[syscalls]\ndeny = ["execve"]\n[filesystem]\nscratch_exec = true\n',
                     file="p.toml")
    assert exc.value.key == "syscalls.deny" and exc.value.line == 2, str(exc.value)


def test_a_contradiction_through_extends_points_at_scratch_exec(tmp_path):
    (tmp_path / "parent.toml").write_text('[filesystem]\ndeny = ["/tmp"]\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = ["parent.toml"]\n[filesystem]\nscratch_exec = true\n')
    with pytest.raises(PolicyError) as exc:
        load_policy(str(child))
    assert exc.value.key == "filesystem.scratch_exec" and exc.value.line == 3, str(exc.value)


def test_scratch_exec_must_be_a_bool():
    with pytest.raises(PolicyError, match="scratch_exec: must be true or false"):
        parse_policy('[filesystem]\nscratch_exec = "yes"\n')


def test_a_nested_child_cannot_gain_scratch_exec():
    """Confinement meets it with the parent's; comparison counts it as a grant."""
    strict, default = load_policy("strict"), load_policy("default")
    assert derive(default, strict).filesystem.scratch_exec is False
    assert derive(default, default).filesystem.scratch_exec is True
    child = strict.replace(filesystem=dataclasses.replace(strict.filesystem, scratch_exec=True))
    assert any("scratch_exec" in w for w in differences(child, strict))
    assert not any("scratch_exec" in w for w in differences(strict, child))
