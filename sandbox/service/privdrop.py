"""`sandbox serve --user NAME` started as root: do what needs root, then drop.

Root is needed for two things only, both done before anything is served:

1. a delegated cgroup subtree, as systemd's Delegate=yes would give: a
   `sandbox-serve-NAME` cgroup below root's own in every cgroup hierarchy
   the launcher uses, owned by NAME (the directory and the files that move
   processes and enable controllers), with this process moved into it. The
   launcher, now NAME, then makes each run's cgroup below it (docs/cgroups.md).
   A hierarchy that cannot be delegated is reported and skipped: runs then
   say which limits came from rlimits only.
2. the state directory, made (or taken over, when empty) for NAME.

Then supplementary groups, gid and uid become NAME's (setgroups, setgid,
setuid: no way back), and the drop is verified.
"""
from __future__ import annotations

import os
import pwd
import sys
from dataclasses import dataclass

from sandbox.errors import InputError

V1_CONTROLLERS = ("memory", "pids", "freezer", "cpu")
V1_FILES = ("tasks", "cgroup.procs")
V2_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")


@dataclass(frozen=True)
class Target:
    name: str
    uid: int
    gid: int
    home: str


def target(name: str) -> Target:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise InputError(f"--user {name}: no such user") from None
    if pw.pw_uid == 0:
        raise InputError(f"--user {name}: that is root; use --allow-root to serve as root")
    return Target(name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def _chown_group(path: str, files: tuple[str, ...], t: Target) -> None:
    os.chown(path, t.uid, t.gid, follow_symlinks=False)
    for f in files:
        p = os.path.join(path, f)
        if os.path.exists(p):
            os.chown(p, t.uid, t.gid, follow_symlinks=False)


def delegate_cgroups(t: Target) -> list[str]:
    """Make and hand over the cgroups; one line per hierarchy (done or why not)."""
    from sandbox.monitor.cgroup_probe import _join_under, _parse_mounts, _parse_own
    with open("/proc/self/mountinfo") as f:
        v1_mounts, v2_mount = _parse_mounts(f.read())
    with open("/proc/self/cgroup") as f:
        own_v1, own_v2 = _parse_own(f.read())
    report: list[str] = []
    leaf = f"sandbox-serve-{t.name}"
    pid = str(os.getpid())
    seen: set[str] = set()
    for ctrl in V1_CONTROLLERS:
        if ctrl not in v1_mounts or ctrl not in own_v1:
            continue
        base = _join_under(*v1_mounts[ctrl], own_v1[ctrl])
        if base is None or base in seen:
            continue
        seen.add(base)
        report.append(_delegate(os.path.join(base, leaf), V1_FILES, t, pid, f"cgroup v1 {ctrl}"))
    if v2_mount is not None and own_v2 is not None:
        base = _join_under(*v2_mount, own_v2)
        if base is not None:
            report.append(_delegate(os.path.join(base, leaf), V2_FILES, t, pid, "cgroup v2"))
    return report


def _delegate(path: str, files: tuple[str, ...], t: Target, pid: str, label: str) -> str:
    """Make the cgroup `path`, give it (and its `files`) to the target user, move
    this process in; the report line, or why it could not be delegated."""
    try:
        os.makedirs(path, exist_ok=True)
        _chown_group(path, files, t)
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(pid)
        return f"{label}: {path}"
    except OSError as exc:
        return f"{label}: not delegated ({exc.strerror})"


def prepare_state_for(state: str, t: Target) -> None:
    """The state directory, NAME's: made for it, or an empty one handed over; one
    that holds something and belongs to someone else is refused (its tokens and
    runs are not root's to give away)."""
    state = os.path.abspath(state)
    parent = os.path.dirname(state)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        os.mkdir(state, 0o700)
    except FileExistsError:
        pass
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != t.uid:
            if os.listdir(fd):
                raise InputError(f"--state {state} belongs to uid {st.st_uid} and is not "
                                 f"empty: give a state directory of {t.name}'s")
            os.fchown(fd, t.uid, t.gid)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def drop(t: Target) -> None:
    os.setgroups(os.getgrouplist(t.name, t.gid))
    os.setgid(t.gid)
    os.setuid(t.uid)
    if os.getuid() != t.uid or os.geteuid() != t.uid or os.getegid() != t.gid:
        raise SystemExit("sandbox serve: dropping to --user failed")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise SystemExit("sandbox serve: could regain root after dropping privileges")
    os.environ.update({"HOME": t.home, "USER": t.name, "LOGNAME": t.name})


def become(name: str, state: str) -> list[str]:
    """As root: delegate cgroups, hand over the state directory, drop to NAME."""
    t = target(name)
    report = delegate_cgroups(t)
    prepare_state_for(state, t)
    drop(t)
    for line in report:
        print(f"sandbox serve: {line}", file=sys.stderr)
    return report
