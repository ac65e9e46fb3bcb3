"""What the thin client and the daemon say to each other, with nothing but `os` and `sys`.

One UNIX stream socket per run. The client sends one request: a 4-byte length,
then NUL-separated fields ``op, argc, argv..., env entries (NAME=VALUE)...``;
with an ``exec`` request, its stdin, stdout, stderr and working directory (an
O_PATH descriptor) ride along with SCM_RIGHTS. While the run lasts the client
sends ``S<signum>`` (one byte each) for every signal it is to forward; the
daemon ends the run with ``X<exit code>``, or ``K<signum>`` when the client is to
die of that signal, as the program did (^C: sandbox.process_end.die_by). ``status`` and ``stop`` are
answered with one line of text. NUL cannot occur in an argument or an
environment entry, so the framing is unambiguous.

Where: ``<state>/daemon/sock-<install id>`` (the launcher's state directory:
$SANDBOX_HOME, else $XDG_STATE_HOME/sandbox, else ~/.local/state/sandbox; the id
names the install, so a client is served only by a daemon of its own code); the
directory is 0700 and the caller's, the socket 0600, and each side checks the
other's uid with SO_PEERCRED.
"""
from __future__ import annotations

import os
import sys

MAX_REQUEST = 1 << 20
# What the client relays (x86_64 numbers): sandbox.group_signals.RELAYED (HUP INT QUIT
# USR1 USR2 PIPE ALRM TERM STKFLT XCPU XFSZ VTALRM PROF IO PWR, SIGRTMIN..SIGRTMAX) and
# WINCH; tests/test_thin_exec.py holds them equal.
SIGNALS = (1, 2, 3, 10, 12, 13, 14, 15, 16, 24, 25, 26, 27, 29, 30, *range(34, 65), 28)
# ^Z and fg without a pty (sandbox.group_signals.JOB_CONTROL): TSTP, CONT
JOB_CONTROL = (20, 18)
# ignored by Python itself at start: a Python client's SIG_IGN of them is not its caller's
PYTHONS_OWN = (13, 25)


def state_dir(env: "os._Environ[str] | dict[str, str]") -> str:
    """As sandbox.launcher.prepare.state_dir, without importing it."""
    home = env.get("SANDBOX_HOME")
    if home:
        return home
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                     ".local", "state")
    return os.path.join(base, "sandbox")


def socket_dir(env: "os._Environ[str] | dict[str, str]") -> str:
    return os.path.join(state_dir(env), "daemon")


def package_dir() -> str:
    """This install's `sandbox` package directory, its real path."""
    return os.path.realpath(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def install_id(package: str | None = None) -> str:
    """Eight hex digits naming an install: FNV-1a (64-bit, folded to 32) of its package
    directory's real path. client.c computes the same from /proc/self/exe. WHY: a
    daemon serves only the clients of its own install (a second venv's `sandbox exec`
    ran the first one's code, ${PYTHON} included: found by the everyday probe)."""
    h = 0xcbf29ce484222325
    for b in os.fsencode(package or package_dir()):
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{(h ^ (h >> 32)) & 0xFFFFFFFF:08x}"


def socket_path(env: "os._Environ[str] | dict[str, str]") -> str:
    """One socket per install in the state directory (`sock-<install_id>`)."""
    return os.path.join(socket_dir(env), f"sock-{install_id()}")


def encode(op: str, argv: list[str], env: dict[str, str]) -> bytes:
    fields = [op.encode(), str(len(argv)).encode()] + [os.fsencode(a) for a in argv] + \
        [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    body = b"\0".join(fields)
    return len(body).to_bytes(4, "little") + body


def decode(body: bytes) -> tuple[str, list[str], dict[str, str]]:
    """Raises ValueError on a malformed request."""
    fields = body.split(b"\0")
    op, argc = fields[0].decode(), int(fields[1])
    if argc < 0 or 2 + argc > len(fields):
        raise ValueError("bad argument count")
    argv = [os.fsdecode(a) for a in fields[2:2 + argc]]
    env: dict[str, str] = {}
    for entry in fields[2 + argc:]:
        if not entry:
            continue
        name, eq, value = entry.partition(b"=")
        if not eq or not name:
            raise ValueError("bad environment entry")
        env[os.fsdecode(name)] = os.fsdecode(value)
    return op, argv, env


SO_PEERGROUPS = 59    # asm-generic/socket.h (Linux 4.13); not in Python 3.11's socket
# Python's getsockopt takes at most 1024 bytes: 256 groups, 4 bytes each (more: the
# call fails, and the client runs cold)
PEERGROUPS_BYTES = 1024


def same_identity(cred: bytes, groups: bytes) -> bool:
    """The peer's SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS are this process's own
    uid, gid and supplementary groups (real and effective alike). WHY: a warm run's
    monitor and stubs are forks of the daemon's, so its program holds the daemon's
    groups and gid, where a cold run's holds its caller's: a caller started with fewer
    (`setpriv --clear-groups`, `sg`, a service's own group list) must not get the
    daemon's by asking it to run something. Each side checks: the client runs cold,
    the daemon runs nothing (tests/test_thin_exec.py)."""
    if len(cred) < 12 or len(groups) % 4:
        return False
    uid, gid = int.from_bytes(cred[4:8], "little"), int.from_bytes(cred[8:12], "little")
    if {uid} != {os.getuid(), os.geteuid()} or {gid} != {os.getgid(), os.getegid()}:
        return False
    theirs = sorted(int.from_bytes(groups[i:i + 4], "little") for i in range(0, len(groups), 4))
    return theirs == sorted(os.getgroups())


def private_dir_ok(path: str) -> bool:
    """The socket's directory is a real directory of ours, 0700 (no one else can
    put a socket there, or replace ours)."""
    import stat
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and \
        stat.S_IMODE(st.st_mode) & 0o077 == 0


if sys.byteorder != "little":   # the length prefix and SCM_RIGHTS packing assume it
    raise ImportError("sandbox.thin supports little-endian machines only")
