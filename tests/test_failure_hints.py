"""Loud failures (issue 13.7): when the sandbox is why a run failed, the RunResult says so
(`hints`) and `sandbox exec` prints one line per cause on stderr: the path, the rule,
and the policy key to change. Judged from the host: RunResult and the CLI's stderr.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys

import pytest

from sandbox.policy import load_policy, parse_policy
from sandbox.policy.model import AuditPolicy

pytestmark = pytest.mark.isolation
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def hint_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("sandbox: hint: ")]


def test_a_refused_exec_deep_in_the_program_names_scratch_exec(launcher):
    """The program itself starts; what it builds in /tmp cannot run under strict."""
    r = launcher.spawn(["sh", "-c", "cp /bin/true /tmp/t && chmod +x /tmp/t && /tmp/t"],
                       policy="strict")
    assert r.exit_code == 126
    assert any("/tmp/t" in h and "scratch_exec = true" in h for h in r.hints), r.hints
    p = cli("exec", "--policy", "strict", "--", "sh", "-c", "cp /bin/true /tmp/t && /tmp/t")
    lines = hint_lines(p.stderr)
    assert p.returncode == 126 and len(lines) == 1 and "scratch_exec" in lines[0], p.stderr


def _outside_the_view() -> str:
    """A host directory that exists, outside /tmp, that `default` does not grant."""
    from sandbox.policy import decide, default_variables, resolve
    pol = resolve(load_policy("default"), default_variables("/nonexistent-w", "/nonexistent-o"))
    for path in ("/boot", "/srv", "/mnt", "/var/log", "/root", "/home", "/media"):
        if os.path.isdir(path) and not decide(pol, "read", path + "/x").allowed:
            return path
    pytest.fail("no host directory outside default's view to test with")


def test_a_path_missing_from_the_view_names_the_read_grant(launcher, tmp_path):
    """A host path outside every rule (not under the private /tmp, which is the sandbox's)."""
    top = _outside_the_view()
    r = launcher.spawn(["cat", top], policy="default", workdir=str(tmp_path))  # an open
    assert r.exit_code != 0
    # its parent, unless that is / (a grant of the whole root): then the name itself
    grant = os.path.dirname(top) if os.path.dirname(top) != "/" else top
    assert any(h.startswith(f"{top}") and "is not in the sandbox's view" in h
               and f'read = ["{grant}"]' in h and f"--read {grant}" in h
               for h in r.hints), r.hints
    assert not any('read = ["/"]' in h for h in r.hints), r.hints


def test_a_write_to_the_read_only_work_directory_names_copy_on_write(launcher, tmp_path):
    r = launcher.spawn(["sh", "-c", "echo x > out.txt"], policy="strict", workdir=str(tmp_path))
    assert r.exit_code != 0
    assert any("work directory is read-only" in h and 'workdir = "copy-on-write"' in h
               for h in r.hints), r.hints


def test_a_full_private_tmp_names_tmp_size(launcher):
    """Known without the audit: the monitor measures the tmpfs after the run."""
    pol = load_policy("default").replace(audit=AuditPolicy(files="none"))
    small = pol.replace(filesystem=dataclasses.replace(pol.filesystem, tmp_size=1 << 20))
    r = launcher.spawn(["sh", "-c", "head -c 4000000 /dev/zero > /tmp/big"], policy=small)
    assert r.exit_code != 0 and "No space left" in r.stderr
    assert any("/tmp was full" in h and "tmp_size" in h for h in r.hints), r.hints


def test_a_tmp_with_room_gives_no_hint(launcher):
    r = launcher.spawn(["sh", "-c", "head -c 1000 /dev/zero > /tmp/small; exit 3"],
                       policy="default")
    assert r.exit_code == 3 and r.hints == [], r.hints


def test_a_denied_syscall_says_which_and_what_to_change(tmp_path):
    pol = tmp_path / "p.toml"
    pol.write_text('extends = ["default"]\n[syscalls]\ndeny = ["mkdir", "mkdirat"]\n'
                   'on_violation = "kill"\n')
    os.chmod(tmp_path, 0o755)
    os.chmod(pol, 0o644)
    p = cli("exec", "--policy", str(pol), "--", "mkdir", "/tmp/x")
    assert p.returncode != 0 and "mkdir" in p.stderr and "[syscalls] allow" in p.stderr, p.stderr


def test_an_unaudited_failing_run_guesses_nothing(launcher):
    pol = load_policy("default").replace(audit=AuditPolicy(files="none"))
    r = launcher.spawn(["sh", "-c", "cat /etc/shadow; exit 4"], policy=pol)
    assert r.exit_code == 4 and r.hints == []


def test_a_program_that_cannot_start_has_one_line_not_two(tmp_path):
    p = cli("exec", "--policy", "strict", "--", "/nonexistent-dir/prog")
    assert p.returncode == 127 and len(p.stderr.splitlines()) == 1, p.stderr


def test_a_successful_run_gets_no_hint_even_after_refusals(launcher):
    r = launcher.spawn(["sh", "-c", "cat /root/.bashrc 2>/dev/null; cat /etc/shadow "
                                    "2>/dev/null; true"], policy="default")
    assert r.status == "ok" and r.hints == []


def test_hints_are_bounded_and_printed_printable(tmp_path):
    """A path the program chose reaches the caller's terminal only escaped: six refused
    reads in six directories named with escapes, each a hint of its own, three shown."""
    work = tmp_path / "w"
    work.mkdir()
    for i in range(1, 7):
        (tmp_path / f"host{i}" / "\033[2J\033]0;owned\007x").mkdir(parents=True)
    pol = tmp_path / "p.toml"
    pol.write_text(f'extends = ["default"]\n[filesystem]\nread = ["{tmp_path}"]\n'
                   f'deny = ["{tmp_path}/host*"]\n')
    for path in (tmp_path, work, pol):
        os.chmod(path, 0o755)
    script = (f"for i in 1 2 3 4 5 6; do cat \"{tmp_path}/host$i/\033[2J\033]0;owned\007x/f\" "
              "2>/dev/null; done; exit 1")
    p = cli("exec", "--policy", str(pol), "--workdir", str(work), "--", "sh", "-c", script)
    lines = hint_lines(p.stderr)
    assert 1 <= len(lines) <= 3, p.stderr
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr


def test_a_deny_rule_is_named(launcher, tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k").write_text("k")
    pol = parse_policy(f'extends = ["default"]\n[filesystem]\nread = ["{tmp_path}"]\n'
                       f'deny = ["{tmp_path}/keys"]\n')
    r = launcher.spawn(["cat", str(tmp_path / "keys" / "k")], policy=pol)
    assert r.exit_code == 1
    assert any("filesystem.deny" in h and "remove that deny rule" in h for h in r.hints), r.hints


def test_a_sandbox_inside_a_sandbox_is_told_to_ask_its_launcher():
    """`sandbox exec` run by a sandboxed program cannot make namespaces. Its one line
    says why, before it tries (tests/test_nested_cli.py), and the outer run's hints
    never say to allow unshare, to write the sandbox's own cgroups, to read all of /,
    or to drop a deny rule it probed."""
    p = cli("exec", "--", sys.executable, "-m", "sandbox", "exec", "--", "echo", "nested")
    assert p.returncode == 125, p.stderr
    assert "inside sandbox run" in p.stderr and "ctx.spawn" in p.stderr, p.stderr
    lines = hint_lines(p.stderr)
    for bad in ('allow = ["unshare"]', "/sys/fs/cgroup", 'read = ["/"]', "remove that deny"):
        assert not any(bad in h for h in lines), (bad, lines)


def test_hints_never_grant_the_root_nor_drop_a_deny_for_a_look():
    from types import SimpleNamespace

    from sandbox.launcher import hints
    pol = load_policy("default")
    denied = [{"operation": "metadata", "path": "/etc/ssl/private",
               "rule": "filesystem.deny: /etc/ssl/private"},
              {"operation": "create", "path": "/sys/fs/cgroup/memory/x",
               "rule": "sandbox: /sys/fs/cgroup"},
              {"operation": "read", "path": "/etc/ssl", "rule": "default: not granted"},
              {"operation": "read", "path": "/srv", "rule": "default: not granted"}]
    result = SimpleNamespace(status="error", denied=denied, denied_syscalls={"mount": 2})
    out = hints.make(result, pol, tmp_full=False, workdir="/w")
    assert not any("deny" in h or "cgroup" in h for h in out), out
    assert any('read = ["/srv"]' in h for h in out), out
    assert any("syscall mount" in h and "namespace" in h and "allow" not in h.split(":")[0]
               for h in out), out


def test_a_file_copied_up_past_the_file_size_limit_names_copy_on_write(tmp_path):
    """Under copy-on-write, `touch big` (or a chmod, or an append) copies the whole file
    into the run's layer: a file larger than file_size killed touch with SIGXFSZ,
    which a direct run never meets (found by a new-user probe: 1.1 GiB, default)."""
    (tmp_path / "big").write_bytes(b"")
    os.truncate(tmp_path / "big", 3 << 20)
    policy = tmp_path / "small.toml"
    policy.write_text('name = "small"\nextends = ["default"]\n[limits]\nfile_size = "1MiB"\n')
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--policy", str(policy),
                        "--", "touch", "big"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 128 + signal.SIGXFSZ, p
    assert "under copy-on-write, a write, chmod or touch" in p.stderr
    assert "--write its directory" in p.stderr


def test_a_runtime_dying_under_an_address_space_limit_is_told_why(launcher):
    """Without a memory cgroup the memory limit is RLIMIT_AS, which counts reserved
    address space: node under --memory 300M died of SIGTRAP with no word of it (found
    by a new-user probe). Where the limit is a cgroup, no such hint is given."""
    pol = load_policy("strict")
    pol = pol.replace(limits=dataclasses.replace(pol.limits, memory=300 << 20))
    r = launcher.spawn(["sh", "-c", "kill -TRAP $$"], policy=pol)
    assert r.signal == signal.SIGTRAP, (r.status, r.reason)
    said = [h for h in r.hints if "RLIMIT_AS of 300 MiB" in h]
    if r.limits_applied.get("memory") == "rlimit":
        assert said, r.hints
    else:
        assert not said and r.limits_applied.get("memory", "").startswith("cgroup"), r


def test_a_timeout_says_which_limit_ended_the_run():
    """Given a --timeout longer than the policy's wall, the run ended at the wall and
    was told to "raise --timeout", which cannot lengthen it (found by a new-user probe)."""
    longer = cli("exec", "--wall", "1s", "--timeout", "100", "--", "sleep", "5")
    assert longer.returncode == 124
    assert "shorter than --timeout 100s: raise --wall" in longer.stderr, longer.stderr
    own = cli("exec", "--timeout", "1", "--", "sleep", "5")
    assert own.returncode == 124 and own.stderr.rstrip().endswith("(raise --timeout)"), own.stderr
    assert len(own.stderr.splitlines()) == 1


def test_a_limit_the_caller_set_names_its_flag():
    p = cli("exec", "--cpu", "1s", "--", "sh", "-c", "while :; do :; done")
    assert p.returncode == 137 or p.returncode == 152 or p.returncode > 128, p
    assert p.stderr.rstrip().endswith("limit_exceeded: cpu (raise --cpu)"), p.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may enter any directory; the unprivileged "
                    "CI pass runs this")
def test_a_current_directory_the_caller_cannot_enter_is_one_line(tmp_path):
    """Started in a directory it may not enter (su/setpriv from root's), a default run
    failed with 'mounts: overlay ...: Permission denied' and a strict one silently ran
    in / (found by a new-user probe)."""
    d = tmp_path / "closed"
    d.mkdir()
    script = f'cd {d} && chmod 0 . && exec "$@"'
    p = subprocess.run(["sh", "-c", script, "sh", sys.executable, "-m", "sandbox", "exec",
                        "--policy", "strict", "--", "pwd"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    d.chmod(0o700)
    assert p.returncode == 125 and p.stdout == "", p
    assert p.stderr == f"sandbox: error: the current directory {d} is not one you may enter; " \
                       "cd elsewhere or give --workdir DIR\n"


def test_writes_creates_and_deletes_in_one_directory_are_one_hint(launcher, tmp_path):
    """sqlite3 reading a WAL database in strict's read-only work directory was told twice
    (a write of db, a create of db-wal) to make the same directory writable (everyday
    probe 3): one line per directory for every kind of write."""
    (tmp_path / "kept").write_text("x\n")
    (tmp_path / "db").write_text("x\n")
    r = launcher.spawn(["sh", "-c", "echo >> db; touch new; rm -f kept; exit 1"],
                       policy="strict", workdir=str(tmp_path))
    assert r.exit_code == 1
    ops = {d["operation"] for d in r.denied}
    assert {"write", "create", "delete"} <= ops, r.denied   # all three were refused
    said = [h for h in r.hints if "work directory is read-only" in h]
    assert len(said) == 1, r.hints
