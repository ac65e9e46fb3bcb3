"""Syscall profiles as data: what each syscall gets, with argument conditions.

One table drives both sides of the seccomp layer, so they cannot disagree:
the BPF compiler (`seccomp_bpf`) turns it into the program the sandboxee
installs, and the monitor evaluates the very same table in Python to name the
syscall behind a `kill` violation (`seccomp_notify.violation_of`).

Actions are abstract here (`ALLOW`, `DENY`, `ENOSYS`, `NOTIFY`); the policy's
`on_violation` decides at compile time what `DENY` becomes (EPERM, a
notification the monitor turns into a kill, or SECCOMP_RET_KILL_PROCESS).

Argument conditions are masked compares on the 64-bit argument. Where the
kernel reads an argument as a 32-bit `int`/`unsigned int` (ioctl's `cmd`,
socket's `domain`, personality's `persona`) the mask is 0xffffffff: the kernel
ignores the high half, so a filter comparing all 64 bits is bypassed by
setting a high bit (CVE-2019-10063: flatpak's TIOCSTI filter). A *deny* rule
must therefore mask to 32 bits; an *allow* rule may compare all 64 bits,
which only refuses more.

Profiles:

- ``default``: allow everything except the calls below (kernel attack surface,
  escapes, cross-sandbox channels, host state). Syscalls newer than this
  table are allowed; see docs/seccomp.md.
- ``strict``: an allowlist sufficient for a Python 3.11 interpreter and the
  usual CLI tools (sh, ls, cat, grep, sed, env, ...); everything else is a
  violation.

Policy adjustments (`resolve`): `allow` names are re-allowed without any
argument condition (allowing ``ptrace`` really allows ptrace; allowing
``ioctl`` drops the TIOCSTI guard, leaving only `setsid()` against it), then
`deny` names are denied: **deny wins over allow**.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

ALLOW, DENY, ENOSYS, NOTIFY = "allow", "deny", "enosys", "notify"
ACTIONS = (ALLOW, DENY, ENOSYS, NOTIFY)

MASK32 = 0xFFFF_FFFF
MASK64 = 0xFFFF_FFFF_FFFF_FFFF

# Constants used by the argument conditions (x86_64 values).
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK, AF_VSOCK = 1, 2, 10, 16, 40
NETLINK_ROUTE = 0
PER_LINUX = 0x0
ADDR_NO_RANDOMIZE = 0x0040000
PERSONALITY_QUERY = 0xFFFF_FFFF
F_SETLEASE = 1024
MFD_NOEXEC_SEAL, MFD_EXEC = 0x8, 0x10
CLONE_NEW_FLAGS = {  # namespace-creating clone(2) flags
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
CLONE_NS_MASK = functools.reduce(lambda a, b: a | b, CLONE_NEW_FLAGS.values())

# x86_64 syscalls newer than the libseccomp on this machine knows (2.5.4 stops at 456).
EXTRA_X86_64 = {
    "uretprobe": 335, "statmount": 457, "listmount": 458, "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460, "lsm_list_modules": 461, "mseal": 462, "setxattrat": 463,
    "getxattrat": 464, "listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467,
    "file_getattr": 468, "file_setattr": 469,
}


@dataclass(frozen=True)
class Cmp:
    """``(args[arg] & mask) == value`` on the 64-bit argument."""
    arg: int
    mask: int
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.arg < 6 or self.value & ~self.mask or not 0 <= self.mask <= MASK64:
            raise ValueError(f"bad comparison {self}")

    def matches(self, args: tuple[int, ...] | list[int]) -> bool:
        return (args[self.arg] & self.mask) == self.value


def low32_eq(arg: int, value: int) -> Cmp:
    """The argument's low 32 bits equal `value` (for args the kernel reads as int)."""
    return Cmp(arg, MASK32, value & MASK32)


def bits_set(arg: int, bits: int) -> Cmp:
    return Cmp(arg, bits, bits)


def bits_clear(arg: int, bits: int) -> Cmp:
    return Cmp(arg, bits, 0)


Case = tuple[tuple[Cmp, ...], str]


@dataclass(frozen=True)
class Rule:
    """What one syscall gets: the first case whose comparisons all hold, else `otherwise`."""
    cases: tuple[Case, ...] = ()
    otherwise: str = ALLOW

    def decide(self, args: tuple[int, ...] | list[int]) -> str:
        for cmps, action in self.cases:
            if all(c.matches(args) for c in cmps):
                return action
        return self.otherwise

    def remap(self, f: Callable[[str], str]) -> "Rule":
        return Rule(tuple((c, f(a)) for c, a in self.cases), f(self.otherwise))

    @property
    def unconditional(self) -> bool:
        return not self.cases


def only(action: str) -> Rule:
    return Rule((), action)


# --- argument-guarded rules shared by both profiles -------------------------------
IOCTL = Rule(((( low32_eq(1, TIOCSTI),), DENY), ((low32_eq(1, TIOCLINUX),), DENY)), ALLOW)
PERSONALITY = Rule(tuple(((low32_eq(0, v),), ALLOW)
                         for v in (PER_LINUX, PERSONALITY_QUERY, ADDR_NO_RANDOMIZE)), DENY)
CLONE = Rule((((bits_clear(0, CLONE_NS_MASK),), ALLOW),), DENY)
# clone3 passes its flags in memory, which seccomp cannot read: ENOSYS makes glibc
# fall back to clone(2), whose flags the CLONE rule inspects. Never a violation.
CLONE3 = only(ENOSYS)
SOCKET_DEFAULT = Rule((((low32_eq(0, AF_VSOCK),), DENY),), ALLOW)
SOCKET_STRICT = Rule((((low32_eq(0, AF_UNIX),), ALLOW), ((low32_eq(0, AF_INET),), ALLOW),
                      ((low32_eq(0, AF_INET6),), ALLOW),
                      ((low32_eq(0, AF_NETLINK), low32_eq(2, NETLINK_ROUTE)), ALLOW)), DENY)
SOCKETPAIR_STRICT = Rule((((low32_eq(0, AF_UNIX),), ALLOW),), DENY)
# A lease taken inside acts on the host's inode (the view's binds share it): a read
# lease on a file the caller owns held every host open for writing until the run
# ended (probe 1, F5). Locks stay: they wait only for writers that lock too.
FCNTL = Rule((((low32_eq(1, F_SETLEASE),), DENY),), ALLOW)

# --- default profile: allow all but these ----------------------------------------
DEFAULT_DENIED = (
    # debugging / other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "process_madvise", "kcmp",
    # kernel attack surface the sandboxee never needs
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register",
    # host-wide pools without a per-user share: io_setup's events count against
    # fs.aio-max-nr for the whole machine (one io_setup(65536) left the host none;
    # libaio users fall back to threads, glibc's POSIX aio never calls it)
    "io_setup",
    "keyctl", "add_key", "request_key", "lookup_dcookie", "fanotify_init",
    # namespaces, mounts, root changes (escapes and nested-userns attack surface)
    "mount", "umount2", "pivot_root", "unshare", "setns", "chroot", "fsopen", "fsconfig",
    "fsmount", "move_mount", "open_tree", "open_tree_attr", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    # host state
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module", "swapon", "swapoff", "reboot",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime", "acct", "quotactl",
    "quotactl_fd", "vhangup", "iopl", "ioperm", "syslog", "nfsservctl", "uselib", "_sysctl",
    "ustat", "sysfs",
)

# --- strict profile: an allowlist -------------------------------------------------
STRICT_ALLOWED = (
    # descriptors and file I/O
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "dup",
    "dup2", "dup3", "pipe", "pipe2", "fcntl", "flock", "fsync", "fdatasync", "sync_file_range",
    "ftruncate", "truncate", "fallocate", "fadvise64", "readahead", "sendfile",
    "copy_file_range", "splice", "tee", "sync", "syncfs",
    # metadata and directories
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "readlink", "readlinkat", "getdents", "getdents64", "getcwd", "chdir",
    "fchdir", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename", "renameat",
    "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
    "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes", "utimensat",
    "futimesat", "umask", "mknod", "mknodat", "getxattr", "lgetxattr", "fgetxattr",
    "listxattr", "llistxattr", "flistxattr", "setxattr", "lsetxattr", "fsetxattr",
    "removexattr", "lremovexattr", "fremovexattr", "inotify_init", "inotify_init1",
    "inotify_add_watch", "inotify_rm_watch",
    # memory
    "brk", "mmap", "munmap", "mprotect", "mremap", "madvise", "msync", "mincore", "mlock",
    "mlock2", "munlock", "membarrier", "memfd_create", "get_mempolicy",
    # processes and threads
    "vfork", "fork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill",
    "tkill", "tgkill", "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid",
    "getegid", "getgroups", "getresuid", "getresgid", "getpgid", "getpgrp", "setpgid",
    "getsid", "setsid", "set_tid_address", "set_robust_list", "get_robust_list", "rseq",
    "futex", "futex_waitv", "arch_prctl", "prctl", "capget", "sched_yield",
    "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_getscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "getpriority", "setpriority",
    "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "sysinfo", "uname",
    "getrandom", "getcpu", "pidfd_open", "pidfd_send_signal", "seccomp", "restart_syscall",
    "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    # time
    "nanosleep", "clock_nanosleep", "clock_gettime", "clock_getres", "gettimeofday", "time",
    "alarm", "getitimer", "setitimer", "timer_create", "timer_settime", "timer_gettime",
    "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime",
    "timerfd_gettime",
    # signals
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "sigaltstack", "pause",
    "signalfd", "signalfd4",
    # waiting
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
    # sockets (socket and socketpair are argument-guarded below)
    "bind", "connect", "listen", "accept", "accept4", "getsockname", "getpeername", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt",
    "getsockopt",
)

PROFILES = ("default", "strict")


@dataclass(frozen=True)
class Profile:
    name: str
    default: str                                  # what unlisted syscalls get
    rules: Mapping[str, Rule] = field(default_factory=dict)


def _default_profile() -> Profile:
    rules = {n: only(DENY) for n in DEFAULT_DENIED}
    rules.update(ioctl=IOCTL, personality=PERSONALITY, clone=CLONE, clone3=CLONE3,
                 socket=SOCKET_DEFAULT, socketpair=SOCKET_DEFAULT, fcntl=FCNTL)
    return Profile("default", ALLOW, rules)


def _strict_profile() -> Profile:
    rules = {n: only(ALLOW) for n in STRICT_ALLOWED}
    rules.update(ioctl=IOCTL, personality=PERSONALITY, clone=CLONE, clone3=CLONE3,
                 socket=SOCKET_STRICT, socketpair=SOCKETPAIR_STRICT, fcntl=FCNTL)
    return Profile("strict", DENY, rules)


def profile(name: str) -> Profile:
    if name == "default":
        return _default_profile()
    if name == "strict":
        return _strict_profile()
    raise ValueError(f"unknown syscall profile {name!r} (known: {', '.join(PROFILES)})")


def syscall_number(name: str) -> int | None:
    """x86_64 number of `name` (libseccomp's table plus `EXTRA_X86_64`), or None."""
    from sandbox.isolation.syscall_table import X86_64
    return X86_64.get(name)


def syscall_name(nr: int) -> str:
    """Name of x86_64 syscall `nr` (``"syscall_<nr>"`` when unknown)."""
    from sandbox.isolation.syscall_table import BY_NUMBER
    return BY_NUMBER.get(nr, f"syscall_{nr}")


def is_known_syscall(name: str) -> bool:
    return syscall_number(name) is not None


@dataclass(frozen=True)
class Table:
    """A resolved profile: numbers, not names; what both the compiler and the monitor use."""
    profile: str
    default: str
    by_nr: Mapping[int, Rule]

    def decide(self, nr: int, args: tuple[int, ...] | list[int]) -> str:
        rule = self.by_nr.get(nr)
        return self.default if rule is None else rule.decide(args)


# A notified syscall that stays plain ALLOW when these comparisons hold: sendto
# without a destination address (send(2)) cannot reach a new peer; a memfd asked
# for with MFD_NOEXEC_SEAL is already what the monitor would make (memfd_seal).
NOTIFY_GUARDS: dict[str, tuple[Cmp, ...]] = {"sendto": (Cmp(4, MASK64, 0),),
                                             "memfd_create": (bits_set(1, MFD_NOEXEC_SEAL),)}
# A notified syscall that is notified only when one of these holds (else plain ALLOW):
# bind under network "none" with the length of a sockaddr_in or sockaddr_in6, the
# binds Landlock refuses and the monitor records (a UNIX bind, which a program's
# own helpers make, costs no round trip; another length meets Landlock unrecorded).
NOTIFY_ONLY_WHEN: dict[str, tuple[Cmp, ...]] = {"bind": (low32_eq(2, 16), low32_eq(2, 28))}


@functools.lru_cache(maxsize=64)
def resolve(profile_name: str, allow: tuple[str, ...] = (), deny: tuple[str, ...] = (),
            notify: frozenset[str] = frozenset(), families_only: bool = False,
            whole: frozenset[str] = frozenset()) -> Table:
    """Profile + policy adjustments + notify set -> Table. Unknown names raise ValueError.

    Order: profile rules, then `allow` (unconditional), then `deny` (deny wins),
    then every ALLOW outcome of a `notify` syscall becomes NOTIFY (a denied call
    is never notified as an audit event: it is a violation or an error), only under
    NOTIFY_ONLY_WHEN's conditions for a name not in `whole` (notified for another
    reason too: a bind the file audit records whatever its address).
    """
    prof = profile(profile_name)
    rules: dict[str, Rule] = dict(prof.rules)
    if families_only:   # network mode "allowlist": the families its clients need, no more
        rules.update(socket=SOCKET_STRICT, socketpair=SOCKETPAIR_STRICT)
    for name in allow:
        rules[name] = only(ALLOW)
    for name in deny:
        rules[name] = only(DENY)
    for name in notify:
        rule = rules.get(name, only(prof.default))
        guard = NOTIFY_GUARDS.get(name)
        notified = rule.remap(lambda a: NOTIFY if a == ALLOW else a)
        if guard is not None and rule.unconditional and rule.otherwise == ALLOW:
            notified = Rule(((guard, ALLOW),) + notified.cases, notified.otherwise)
        when = NOTIFY_ONLY_WHEN.get(name) if name not in whole else None
        if when is not None and rule.unconditional and rule.otherwise == ALLOW:
            notified = Rule(tuple(((c,), NOTIFY) for c in when), ALLOW)
        rules[name] = notified
    by_nr: dict[int, Rule] = {}
    explicit = set(allow) | set(deny) | set(notify)
    for name, rule in rules.items():
        nr = syscall_number(name)
        if nr is None:
            if name in explicit:
                raise ValueError(f"unknown syscall {name!r}")
            continue  # a profile entry that does not exist on x86_64 (e.g. stime)
        by_nr[nr] = rule
    return Table(profile_name, prof.default, by_nr)


def names(nrs: Iterable[int]) -> list[str]:
    return [syscall_name(n) for n in nrs]
