"""Who the program is inside the sandbox: one answer for the environment and /etc.

The caller's uid and gid are mapped to themselves (namespaces.py), so the
program runs as the caller's user. Programs ask who that is in two ways that
must agree: the environment (HOME, USER, LOGNAME, SHELL) and the passwd
database (getpwuid: `id -un`, `getent passwd $(id -u)`, Java's user.home,
Python's expanduser without HOME). The launcher computes the environment with
`identity()`, and the mount layer (sysview.py) binds over the view's
/etc/passwd and /etc/group a copy of the host's files in which that one entry
names the same HOME and shell -- the other entries are kept, so `ls -l` still
shows owners by name. Both read the host's /etc/passwd, never NSS, so they
cannot disagree.

HOME is a private, writable directory in the sandbox's own /tmp (`HOME_DIR`):
never the caller's real home, which the policy may not even show.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

HOME_DIR = "/tmp/home"
FALLBACK_NAME = "sandbox"
FALLBACK_SHELL = "/bin/sh"
_NOLOGIN = ("nologin", "false")
_SAFE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,31}$")
_TERM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    home: str
    shell: str
    group: str


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(4 << 20)
    except OSError:
        return ""


def _entry(text: str, field: int, value: int) -> list[str] | None:
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > field and parts[field] == str(value):
            return parts
    return None


def _shell(shell: str) -> str:
    """The entry's shell unless it is a refusal (nologin, false): a program that
    runs $SHELL wants a shell, and the sandbox is not a login."""
    if shell.startswith("/") and os.path.basename(shell) not in _NOLOGIN:
        return shell
    return FALLBACK_SHELL


def identity(uid: int, gid: int, passwd: str | None = None, group: str | None = None) -> Identity:
    """The sandbox's user: the host's name for `uid` (or "sandbox"), HOME_DIR, a shell."""
    passwd = _read("/etc/passwd") if passwd is None else passwd
    group = _read("/etc/group") if group is None else group
    pw = _entry(passwd, 2, uid)
    gr = _entry(group, 2, gid)
    name = pw[0] if pw and _SAFE.match(pw[0]) else FALLBACK_NAME
    shell = _shell(pw[6]) if pw and len(pw) > 6 else FALLBACK_SHELL
    gname = gr[0] if gr and _SAFE.match(gr[0]) else FALLBACK_NAME
    return Identity(name=name, uid=uid, gid=gid, home=HOME_DIR, shell=shell, group=gname)


def passwd_view(host: str, who: Identity) -> str:
    """The host's passwd with the sandbox user's entry naming its HOME and shell
    (added when the host has none); every other entry as it was."""
    line = f"{who.name}:x:{who.uid}:{who.gid}:{who.name}:{who.home}:{who.shell}"
    out, done = [], False
    for raw in host.splitlines():
        parts = raw.split(":")
        if len(parts) > 2 and parts[2] == str(who.uid):
            if not done:
                out.append(line)
                done = True
            continue
        out.append(raw)
    if not done:
        out.append(line)
    return "\n".join(out) + "\n"


def group_view(host: str, who: Identity) -> str:
    """The host's group file, plus an entry for the sandbox's gid when it has none."""
    if _entry(host, 2, who.gid) is not None:
        return host if host.endswith("\n") or not host else host + "\n"
    lines = host.splitlines() + [f"{who.group}:x:{who.gid}:"]
    return "\n".join(lines) + "\n"


def hosts_view(host: str, hostname: str) -> str:
    """The host's /etc/hosts plus the sandbox's own host name on loopback, so
    `getent hosts $(hostname)` resolves (the host's file is never written)."""
    lines = host.splitlines()
    lines.append(f"127.0.1.1\t{hostname}")
    lines.append(f"::1\t{hostname}")
    return "\n".join(lines) + "\n"


def environment(who: Identity, caller_env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """HOME, USER, LOGNAME and SHELL of `who`; TERM passed through when it looks like a
    terminal name, else "dumb" (tput and curses programs need one)."""
    term = caller_env.get("TERM", "")
    return {"HOME": who.home, "USER": who.name, "LOGNAME": who.name, "SHELL": who.shell,
            "TERM": term if _TERM.match(term) else "dumb"}
