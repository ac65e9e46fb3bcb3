"""is_narrower_or_equal: tightening is accepted, every kind of loosening is named."""
from __future__ import annotations

from dataclasses import replace

import pytest

from sandbox.policy import load_policy
from sandbox.policy.compare import is_narrower_or_equal
from sandbox.policy.model import FilesystemPolicy, Limits, Policy, SyscallPolicy

BASE = Policy(
    name="b",
    filesystem=FilesystemPolicy(read=("/usr", "${WORKDIR}"), write=("${OUTPUT}",),
                                exec=("/usr/bin",), deny=("/etc/shadow*",)),
    limits=Limits(cpu=10, wall=60, memory=1 << 30, processes=32),
    syscalls=SyscallPolicy(profile="default", allow=("ptrace",), deny=("bpf",)),
)


def fs(**kw):
    return replace(BASE.filesystem, **kw)


def test_a_policy_is_narrower_or_equal_to_itself_and_builtins_compare():
    assert is_narrower_or_equal(BASE, BASE) == (True, "")
    strict, default = load_policy("strict"), load_policy("default")
    assert is_narrower_or_equal(strict, default)[0]
    ok, why = is_narrower_or_equal(default, strict)
    assert not ok and "limits.cpu" in why and "tmp_size" in why


@pytest.mark.parametrize("change, fragment", [
    (dict(filesystem=fs(read=("/usr", "${WORKDIR}", "/home"))), "filesystem.read: /home"),
    (dict(filesystem=fs(write=("${OUTPUT}", "/usr/lib"))), "filesystem.write: /usr/lib"),
    (dict(filesystem=fs(exec=("/usr/bin", "${WORKDIR}"))), "filesystem.exec: ${WORKDIR} needs exec"),
    (dict(filesystem=fs(deny=())), "filesystem.deny: drops /etc/shadow*"),
    (dict(filesystem=fs(read=("/",))), "filesystem.read: /"),
    (dict(filesystem=fs(read=("/usr", "${WORKDIR}", "/*"))), "filesystem.read: /*"),
    (dict(network=replace(BASE.network, mode="loopback")), "network.mode"),
    (dict(limits=replace(BASE.limits, wall=None)), "limits.wall: unlimited"),
    (dict(limits=replace(BASE.limits, memory=2 << 30)), "limits.memory"),
    (dict(syscalls=replace(BASE.syscalls, allow=("ptrace", "mount"))), "syscalls.allow: adds mount"),
    (dict(syscalls=replace(BASE.syscalls, deny=())), "syscalls.deny: drops bpf"),
    (dict(best_effort=True), "best_effort"),
    (dict(filesystem=fs(workdir="copy-on-write")), "filesystem.workdir"),
    (dict(filesystem=fs(scratch_exec=True)), "filesystem.scratch_exec"),
])
def test_each_loosening_is_refused_with_its_reason(change, fragment):
    ok, why = is_narrower_or_equal(BASE.replace(**change), BASE)
    assert not ok and fragment in why, why


@pytest.mark.parametrize("change", [
    dict(filesystem=fs(read=("/usr/share", "${WORKDIR}/sub"))),      # inside granted trees
    dict(filesystem=fs(read=("/usr/lib/*.so",))),                      # glob inside a grant
    dict(filesystem=fs(exec=(), write=())),
    dict(filesystem=fs(read=("${OUTPUT}/x",))),                         # write implies read
    dict(filesystem=fs(deny=("/etc/shadow*", "/usr/secret"))),          # more denies
    dict(filesystem=fs(tmp_size=1 << 20)),
    dict(limits=replace(BASE.limits, wall=5, open_files=10)),          # limited where b is not
    dict(syscalls=replace(BASE.syscalls, profile="strict", allow=(), deny=("bpf", "ptrace"),
                          on_violation="kill")),
    dict(audit=replace(BASE.audit, files="all")),
])
def test_tightenings_are_accepted(change):
    assert is_narrower_or_equal(BASE.replace(**change), BASE) == (True, "")


def test_order_rules_for_syscall_action_audit_and_network():
    killing = BASE.replace(syscalls=replace(BASE.syscalls, on_violation="kill"))
    assert not is_narrower_or_equal(BASE, killing)[0]               # errno looser than kill
    audited = BASE.replace(audit=replace(BASE.audit, files="denied"))
    assert not is_narrower_or_equal(BASE, audited)[0]               # weaker audit
    host = BASE.replace(network=replace(BASE.network, mode="host"))
    assert is_narrower_or_equal(BASE, host)[0]
    default_prof = BASE.replace(syscalls=replace(BASE.syscalls, profile="strict"))
    assert not is_narrower_or_equal(BASE, default_prof)[0]


def test_glob_rules_cover_matching_paths():
    b = BASE.replace(filesystem=fs(read=("/home/*/data",)))
    assert is_narrower_or_equal(BASE.replace(filesystem=fs(read=("/home/ann/data/x",),
                                                         write=(), exec=())), b)[0]
    assert not is_narrower_or_equal(BASE.replace(filesystem=fs(read=("/home/ann",),
                                                             write=(), exec=())), b)[0]
