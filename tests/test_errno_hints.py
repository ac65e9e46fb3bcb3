"""Loud failures (issue 13.7): a syscall refused in errno mode and a full /dev/shm.

Under ``on_violation = "errno"`` a denied syscall returns EPERM and the program
goes on (or fails with "Operation not permitted", which users blame on their
own code). The monitor now sees each refusal (the filter hands denied calls to
it where a listener exists), answers EPERM itself, counts it by name in
`RunResult.denied_syscalls`, and a failed run gets a hint naming the syscall,
the rule and the policy key. A full private /dev/shm is measured like /tmp.
Judged from what the trusted side reports; the program's output is not trusted.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from sandbox.policy import load_policy

pytestmark = pytest.mark.isolation

MOUNT = ("import ctypes, sys\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         "r = libc.syscall(165, b'none', b'/tmp', b'tmpfs', 0, None)\n"
         "print(r, ctypes.get_errno()); sys.exit(3 if r else 0)\n")


# ptrace(PTRACE_TRACEME): a debugger's first call, which a policy may well allow
PTRACE = MOUNT.replace("libc.syscall(165, b'none', b'/tmp', b'tmpfs', 0, None)",
                       "libc.syscall(101, 0, 0, 0, 0)")


def test_a_syscall_refused_in_errno_mode_is_named(launcher, py):
    r = launcher.spawn([py, "-c", PTRACE], policy="default")
    assert (r.exit_code, r.stdout.split()) == (3, ["-1", "1"]), (r.stdout, r.stderr)
    assert r.denied_syscalls == {"ptrace": 1}, r.denied_syscalls
    hint = [h for h in r.hints if "ptrace" in h]
    assert hint and "syscalls.profile" in hint[0] and "[syscalls] allow" in hint[0], r.hints


def test_a_refused_mount_is_named_but_never_offered(launcher, py):
    """A namespace or mount call: the hint says why, and never to allow it."""
    r = launcher.spawn([py, "-c", MOUNT], policy="default")
    assert (r.exit_code, r.stdout.split()) == (3, ["-1", "1"]), (r.stdout, r.stderr)
    assert r.denied_syscalls == {"mount": 1}, r.denied_syscalls
    hint = [h for h in r.hints if "mount" in h]
    assert hint and "no namespaces or mounts of its own" in hint[0], r.hints
    assert "[syscalls] allow" not in hint[0], r.hints


def test_a_run_that_went_on_gets_the_count_but_no_hint(launcher, py):
    r = launcher.spawn([py, "-c", MOUNT.replace("sys.exit(3 if r else 0)", "pass")],
                       policy="default")
    assert r.status == "ok" and r.denied_syscalls == {"mount": 1} and r.hints == []


def test_a_syscall_in_syscalls_deny_names_that_rule(launcher, py):
    pol = load_policy("default")
    pol = pol.replace(syscalls=replace(pol.syscalls, deny=("getcpu",)))
    code = ("import ctypes, sys\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "sys.exit(4 if libc.syscall(309, None, None, None) else 0)\n")
    r = launcher.spawn([py, "-c", code], policy=pol)
    assert r.exit_code == 4 and r.denied_syscalls == {"getcpu": 1}, (r.stderr, r.denied_syscalls)
    assert any("getcpu" in h and "syscalls.deny" in h for h in r.hints), r.hints


def test_sandbox_exec_prints_the_hint(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sandbox", "exec", "--", sys.executable, "-c",
                        PTRACE], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert p.returncode == 3, p.stderr
    assert "ptrace" in p.stderr and "[syscalls] allow" in p.stderr, p.stderr


def test_a_full_dev_shm_is_hinted(launcher):
    r = launcher.spawn(["sh", "-c", "cat /dev/zero > /dev/shm/fill; exit 1"], policy="default")
    assert r.exit_code == 1
    assert any("/dev/shm" in h and "full" in h for h in r.hints), r.hints
