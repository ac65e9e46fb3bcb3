"""The seccomp compiler, checked without a kernel: the BPF program must decide
exactly what the Python table decides (the monitor relies on that), for every
syscall number and for the argument values the rules care about."""
from __future__ import annotations

import errno
import random

import pytest

from sandbox.isolation import seccomp, seccomp_bpf as bpf, syscall_profiles as sp
from sandbox.policy.model import SyscallPolicy

EPERM = bpf.ret_errno(errno.EPERM)
ENOSYS = bpf.ret_errno(errno.ENOSYS)
NR = sp.syscall_number

# Argument vectors around every comparison the profiles make, plus noise.
_rng = random.Random(7)
HIGH = 1 << 32
PROBES = [[0] * 6]
for v in (sp.TIOCSTI, sp.TIOCLINUX, sp.TIOCSTI + 1, sp.AF_UNIX, sp.AF_INET, sp.AF_INET6,
          sp.AF_NETLINK, sp.AF_VSOCK, 8, sp.ADDR_NO_RANDOMIZE, sp.PERSONALITY_QUERY,
          0x400000, 17, 0x11 | 0x10000000, 0x3D0F00, *sp.CLONE_NEW_FLAGS.values()):
    for hi in (0, HIGH, 0xFFFFFFFF << 32):
        for pos in range(3):
            args = [0] * 6
            args[pos] = v | hi
            PROBES.append(args)
PROBES.append([sp.AF_NETLINK, 3, 9, 0, 0, 0])
PROBES += [[_rng.getrandbits(64) for _ in range(6)] for _ in range(40)]

POLICIES = [
    SyscallPolicy(),
    SyscallPolicy(on_violation="kill"),
    SyscallPolicy(profile="strict"),
    SyscallPolicy(profile="strict", on_violation="kill"),
    SyscallPolicy(profile="default", allow=("ptrace", "ioctl"), deny=("uname", "openat")),
    SyscallPolicy(profile="strict", allow=("msgget", "ptrace"), deny=("ptrace", "getcwd")),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.profile}-{p.on_violation}-"
                         f"{len(p.allow)}a{len(p.deny)}d")
@pytest.mark.parametrize("notify,via", [(frozenset(), False), (seccomp.FILE_SYSCALLS, True)])
def test_program_agrees_with_table(policy, notify, via):
    prog = seccomp.compile_program(policy, notify=notify, kill_via_notify=via)
    table = seccomp.table_for(policy, notify)
    act = seccomp._action_map(policy.on_violation, via)
    guarded = {nr for nr, rule in table.by_nr.items() if not rule.unconditional}
    assert guarded, "the profiles always guard some arguments"
    for nr in range(0, 520):
        for args in (PROBES if nr in guarded else PROBES[::25]):
            assert bpf.run(prog, nr, args) == act(table.decide(nr, args)), (nr, args)


@pytest.mark.parametrize("policy", POLICIES[:4], ids=str)
def test_foreign_architectures_and_x32_are_killed(policy):
    prog = seccomp.compile_program(policy)
    for nr in (0, 1, 20, 39, 11):
        assert bpf.run(prog, nr, arch=bpf.AUDIT_ARCH_I386) == bpf.RET_KILL_PROCESS
        assert bpf.run(prog, nr, arch=0x40000028) == bpf.RET_KILL_PROCESS     # 32-bit ARM
        assert bpf.run(prog, nr | bpf.X32_SYSCALL_BIT) == bpf.RET_KILL_PROCESS
    assert bpf.run(prog, -1) == bpf.RET_KILL_PROCESS     # unsigned: out of the x86_64 range


def test_default_profile_decisions():
    prog = seccomp.compile_program(SyscallPolicy())

    def run(name, *args):
        return bpf.run(prog, NR(name), list(args) + [0] * (6 - len(args)))
    for name in ("ptrace", "process_vm_readv", "bpf", "perf_event_open", "keyctl", "add_key",
                 "userfaultfd", "io_uring_setup", "io_uring_enter", "mount", "unshare",
                 "setns", "pivot_root", "open_by_handle_at", "init_module", "kexec_load",
                 "reboot", "settimeofday", "clock_settime", "swapon", "iopl", "syslog",
                 "fsopen", "move_mount", "open_tree"):
        assert run(name) == EPERM, name
    assert bpf.run(prog, sp.EXTRA_X86_64["open_tree_attr"]) == EPERM
    assert run("read") == run("openat") == run("execve") == bpf.RET_ALLOW
    assert run("clone3") == ENOSYS
    assert run("clone", 0x01200011) == bpf.RET_ALLOW           # what glibc's fork passes
    for flag in sp.CLONE_NEW_FLAGS.values():
        assert run("clone", 0x11 | flag) == EPERM
    # TIOCSTI on the low 32 bits whatever the high bits say (CVE-2019-10063)
    for hi in (0, 1 << 32, 0xFFFF0000 << 32):
        assert run("ioctl", 0, sp.TIOCSTI | hi) == EPERM
        assert run("ioctl", 0, sp.TIOCLINUX | hi) == EPERM
        assert run("socket", sp.AF_VSOCK | hi, 1) == EPERM
    assert run("ioctl", 0, 0x5401) == bpf.RET_ALLOW          # TCGETS
    assert run("socket", sp.AF_INET, 1) == bpf.RET_ALLOW
    assert run("personality", 0xFFFFFFFF) == run("personality", 0) == bpf.RET_ALLOW
    assert run("personality", sp.ADDR_NO_RANDOMIZE) == bpf.RET_ALLOW
    for bad in (8, 0x0400000, 0x0100000, 0x0020000, 1 << 32 | 8):
        assert run("personality", bad) == EPERM


def test_strict_profile_decisions():
    prog = seccomp.compile_program(SyscallPolicy(profile="strict"))

    def run(name, *args):
        return bpf.run(prog, NR(name), list(args) + [0] * (6 - len(args)))
    for name in ("read", "openat", "execve", "mmap", "futex", "rt_sigaction", "wait4",
                 "newfstatat", "getdents64", "pipe2", "statx", "rseq", "getrandom"):
        assert run(name) == bpf.RET_ALLOW, name
    for name in ("ptrace", "msgget", "mount", "kexec_load", "bpf", "add_key", "setuid",
                 "io_uring_setup", "sched_setattr", "acct", "chroot"):
        assert run(name) == EPERM, name
    assert bpf.run(prog, 450) == EPERM                              # unlisted, by number
    assert run("socket", sp.AF_UNIX, 1) == bpf.RET_ALLOW
    assert run("socket", sp.AF_NETLINK, 3, sp.NETLINK_ROUTE) == bpf.RET_ALLOW
    assert run("socket", sp.AF_NETLINK, 3, 12) == EPERM             # NETLINK_NETFILTER
    assert run("socket", 17, 3) == EPERM                            # AF_PACKET
    assert run("socketpair", sp.AF_INET, 1) == EPERM
    assert run("ioctl", 1, 0x5401) == bpf.RET_ALLOW
    assert run("ioctl", 1, sp.TIOCSTI | 1 << 32) == EPERM
    assert run("clone", 0x10000000) == EPERM
    assert run("clone3") == ENOSYS


def test_allow_and_deny_adjust_and_deny_wins():
    base = seccomp.compile_program(SyscallPolicy())
    prog = seccomp.compile_program(SyscallPolicy(allow=("ptrace",), deny=("uname",)))
    assert bpf.run(base, NR("ptrace")) == EPERM and bpf.run(prog, NR("ptrace")) == bpf.RET_ALLOW
    assert bpf.run(base, NR("uname")) == bpf.RET_ALLOW and bpf.run(prog, NR("uname")) == EPERM
    both = seccomp.compile_program(SyscallPolicy(allow=("uname",), deny=("uname",)))
    assert bpf.run(both, NR("uname")) == EPERM
    # allowing ioctl lifts its argument guard too (documented risk)
    lifted = seccomp.compile_program(SyscallPolicy(allow=("ioctl",)))
    assert bpf.run(lifted, NR("ioctl"), [0, sp.TIOCSTI, 0, 0, 0, 0]) == bpf.RET_ALLOW
    strict = seccomp.compile_program(SyscallPolicy(profile="strict", allow=("msgget",)))
    assert bpf.run(strict, NR("msgget")) == bpf.RET_ALLOW


def test_violation_actions():
    kill = seccomp.compile_program(SyscallPolicy(on_violation="kill"))
    assert bpf.run(kill, NR("ptrace")) == bpf.RET_KILL_PROCESS
    assert bpf.run(kill, NR("clone3")) == ENOSYS                    # never a violation
    notif = seccomp.compile_program(SyscallPolicy(on_violation="kill"), kill_via_notify=True)
    assert bpf.run(notif, NR("ptrace")) == bpf.RET_USER_NOTIF
    assert bpf.run(notif, NR("read")) == bpf.RET_ALLOW


def test_notify_set_routes_allowed_calls_only():
    pol = SyscallPolicy(deny=("unlink",))
    prog = seccomp.compile_program(pol, notify=seccomp.FILE_SYSCALLS)
    assert bpf.run(prog, NR("openat")) == bpf.RET_USER_NOTIF
    assert bpf.run(prog, NR("execve")) == bpf.RET_USER_NOTIF
    assert bpf.run(prog, NR("unlink")) == EPERM                     # denied stays denied
    assert bpf.run(prog, NR("read")) == bpf.RET_ALLOW
    assert seccomp.notify_set_for("none") == frozenset()      # no listener: nothing notified
    seal = seccomp.SEAL_SYSCALLS
    assert seccomp.notify_set_for("denied") == seccomp.FILE_SYSCALLS | seal
    assert seccomp.notify_set_for("all") == seccomp.FILE_SYSCALLS | seccomp.STAT_SYSCALLS | seal
    assert seccomp.notify_set_for("none", "none") == \
        seccomp.NET_SYSCALLS | seccomp.BIND_SYSCALLS | seal
    assert seccomp.notify_set_for("none", "loopback") == seccomp.NET_SYSCALLS | seal
    assert seccomp.notify_set_for("none", "host", "kill") == seal
    with pytest.raises(ValueError):
        seccomp.notify_set_for("everything")


def test_bind_goes_to_the_monitor_with_an_inet_address_length_only():
    """Mode "none": a bind with the length of a sockaddr_in/_in6 is the monitor's (it
    refuses a TCP one, recorded); a UNIX bind (any other length) costs no round trip."""
    prog = seccomp.compile_program(SyscallPolicy(), notify=seccomp.notify_set_for(
        "none", "none"))
    assert bpf.run(prog, NR("bind"), [3, 0, 16, 0, 0, 0]) == bpf.RET_USER_NOTIF
    assert bpf.run(prog, NR("bind"), [3, 0, 28, 0, 0, 0]) == bpf.RET_USER_NOTIF
    assert bpf.run(prog, NR("bind"), [3, 0, 1 << 32 | 16, 0, 0, 0]) == bpf.RET_USER_NOTIF
    assert bpf.run(prog, NR("bind"), [3, 0, 110, 0, 0, 0]) == bpf.RET_ALLOW
    loop = seccomp.compile_program(SyscallPolicy(), notify=seccomp.notify_set_for(
        "none", "loopback"))
    assert bpf.run(loop, NR("bind"), [3, 0, 16, 0, 0, 0]) == bpf.RET_ALLOW


def test_memfds_without_the_exec_seal_go_to_the_monitor():
    """It makes them with MFD_NOEXEC_SEAL (sandbox/monitor/memfd_seal.py); one asked for
    with the seal is already what it would make."""
    prog = seccomp.compile_program(SyscallPolicy(), notify=seccomp.SEAL_SYSCALLS)
    mfd = NR("memfd_create")
    for flags in (0, 1, 0x10, 1 << 40):
        assert bpf.run(prog, mfd, (0, flags, 0, 0, 0, 0)) == bpf.RET_USER_NOTIF, flags
    for flags in (0x8, 0x9, 0x8 | 1 << 40):
        assert bpf.run(prog, mfd, (0, flags, 0, 0, 0, 0)) == bpf.RET_ALLOW, flags


def test_programs_are_cached_per_policy_and_notify_set():
    a = seccomp.compile_program(SyscallPolicy(allow=("ptrace", "bpf")), notify={"openat"})
    b = seccomp.compile_program(SyscallPolicy(allow=("bpf", "ptrace", "bpf")),
                                notify=frozenset({"openat"}))
    assert a is b
    c = seccomp.compile_program(SyscallPolicy(allow=("bpf", "ptrace")))
    assert c is not a and c != a
    kill = SyscallPolicy(on_violation="kill")
    assert seccomp.warm(kill, "denied") is seccomp.compile_program(
        seccomp.audited_syscalls(kill, "denied"),
        notify=seccomp.FILE_SYSCALLS | seccomp.SEAL_SYSCALLS, kill_via_notify=True)


def test_unknown_names():
    assert sp.is_known_syscall("openat") and sp.is_known_syscall("open_tree_attr")
    assert not sp.is_known_syscall("no_such_call")
    assert not sp.is_known_syscall("stime")          # i386 only
    with pytest.raises(ValueError, match="no_such_call"):
        seccomp.compile_program(SyscallPolicy(deny=("no_such_call",)))
    with pytest.raises(ValueError):
        seccomp.compile_program(SyscallPolicy(profile="lenient"))
    assert sp.syscall_name(101) == "ptrace" and sp.syscall_name(467) == "open_tree_attr"
    assert sp.syscall_name(100000) == "syscall_100000"


def test_program_sizes_are_within_the_kernel_limit():
    for pol in POLICIES:
        prog = seccomp.compile_program(pol, notify=seccomp.FILE_SYSCALLS, kill_via_notify=True)
        assert len(prog) % 8 == 0 and 0 < len(prog) // 8 <= bpf.BPF_MAXINSNS
