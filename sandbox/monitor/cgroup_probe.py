"""Which cgroup mechanism can hold a sandbox on this machine, for this user.

Split from `cgroups.py` (which makes and runs the cgroups) because deciding is
its own job: parse /proc/self/mountinfo and /proc/self/cgroup, then per
controller prefer a delegated cgroup v2 subtree, else the v1 hierarchy, else
nothing with a human reason. Writability is *tried* (an empty probe cgroup is
made and removed), never guessed from file modes. Never raises for a missing
feature. See docs/cgroups.md.
"""
from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field
from typing import Any
from sandbox.isolation.libc import write_file as _write

LIMITED = ("memory", "pids")        # controllers that carry a policy limit
HELPERS = ("freezer",)              # v1 only: stops forks while kill_all() works
# CPU is accounted, not limited, by a cgroup: the kernel has no "total CPU seconds"
# limit for a group (cpu.max is a rate), so the monitor reads the group's usage and
# kills the tree at the budget. v2 needs no controller (cpu.stat usage_usec is core);
# v1 needs the cpuacct hierarchy.
ACCOUNTING = ("cpuacct",)
PREFIX = "sandbox-"

# --------------------------------------------------------------------- probe
@dataclass(frozen=True)
class ControllerSupport:
    """Whether one controller can hold a sandbox, where, and if not, why."""
    controller: str
    version: str | None = None      # "v1" | "v2" when usable
    base: str | None = None         # directory that will hold the sandbox-* cgroups
    reason: str = ""                # why unusable ("" when usable)
    needs_enable: bool = False      # v2: must be added to base's cgroup.subtree_control

    @property
    def usable(self) -> bool:
        return self.version is not None

    def to_dict(self) -> dict[str, Any]:
        return {"usable": self.usable, "version": self.version, "base": self.base,
                "reason": self.reason, "needs_enable": self.needs_enable}


@dataclass(frozen=True)
class CgroupSupport:
    """What `probe()` found: the mounts, the caller's cgroups, each controller's verdict."""
    uid: int
    v1_mounts: dict[str, str] = field(default_factory=dict)   # controller -> mount point
    v2_mount: str | None = None
    v2_base: str | None = None                                 # the caller's own v2 cgroup dir
    v2_controllers: tuple[str, ...] = ()                       # its cgroup.controllers
    controllers: dict[str, ControllerSupport] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return any(self.controllers[c].usable for c in LIMITED + ACCOUNTING
                   if c in self.controllers)

    @property
    def reason(self) -> str:
        """Why limited controllers are unusable ("" when all are usable)."""
        return "; ".join(self.controllers[c].reason for c in LIMITED
                         if c in self.controllers and not self.controllers[c].usable)

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "usable": self.usable, "reason": self.reason,
                "v1_mounts": dict(self.v1_mounts), "v2_mount": self.v2_mount,
                "v2_base": self.v2_base, "v2_controllers": list(self.v2_controllers),
                "controllers": {k: v.to_dict() for k, v in self.controllers.items()}}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()




def _start_time(pid: int) -> int | None:
    try:
        stat = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[19])


def owner_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid) or 0}"


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _parse_mounts(mountinfo: str) -> tuple[dict[str, tuple[str, str]], tuple[str, str] | None]:
    """v1: controller -> (mount point, mount root); v2: (mount point, mount root)."""
    v1: dict[str, tuple[str, str]] = {}
    v2: tuple[str, str] | None = None
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        f, p = pre.split(), post.split()
        if len(f) < 5 or len(p) < 3:
            continue
        root, point = f[3].replace("\\040", " "), f[4].replace("\\040", " ")
        if p[0] == "cgroup2" and v2 is None:
            v2 = (point, root)
        elif p[0] == "cgroup":
            for opt in p[2].split(","):
                if opt in LIMITED + HELPERS + ACCOUNTING and opt not in v1:
                    v1[opt] = (point, root)
    return v1, v2


def _parse_own(proc_cgroup: str) -> tuple[dict[str, str], str | None]:
    """/proc/self/cgroup -> (v1 controller -> path, v2 path)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2 = path
        else:
            for c in ctrls.split(","):
                v1[c] = path
    return v1, v2


def _join_under(point: str, root: str, own: str) -> str | None:
    """The directory of cgroup `own` in a mount of hierarchy subtree `root`."""
    if root != "/" and own != root and not own.startswith(root.rstrip("/") + "/"):
        return None
    rel = own[len(root):] if root != "/" else own
    return os.path.join(point, rel.lstrip("/")).rstrip("/") or point


def _try_mkdir(base: str) -> OSError | None:
    """Really make and remove a probe cgroup: the only honest writability test."""
    probe_dir = os.path.join(base, f"{PREFIX}{owner_token()}-probe{time.monotonic_ns() % 10**9}")
    try:
        os.mkdir(probe_dir)
    except OSError as exc:
        return exc
    try:
        os.rmdir(probe_dir)
    except OSError:
        pass  # cleanup_stale() removes it once we are gone
    return None


def _mine() -> set[int]:
    """This process and its descendants (the ones we may move between cgroups)."""
    me = os.getpid()
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = _read(f"/proc/{name}/stat")
            except OSError:
                continue
            kids.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(name))
    out, stack = {me}, [me]
    while stack:
        for k in kids.get(stack.pop(), ()):
            out.add(k)
            stack.append(k)
    return out


def _procs(path: str) -> set[int]:
    try:
        return {int(x) for x in _read(os.path.join(path, "cgroup.procs")).split()}
    except (OSError, ValueError):
        return set()


def _probe_v2(base: str, own: str, ctrl: str, available: tuple[str, ...],
              uid: int) -> ControllerSupport:
    where = f"cgroup v2 {ctrl}: {base}"
    if ctrl in ACCOUNTING:  # cpu.stat is in every v2 cgroup: a writable base is enough
        err = _try_mkdir(base)
        if err is not None:
            return ControllerSupport(ctrl, reason=f"{where}: not writable ({_errname(err)}) "
                                     f"as uid {uid}")
        if not os.access(os.path.join(base, "cgroup.procs"), os.W_OK):
            return ControllerSupport(ctrl, reason=f"{where}/cgroup.procs: not writable as "
                                     f"uid {uid}")
        return ControllerSupport(ctrl, "v2", base)
    if ctrl not in available:
        return ControllerSupport(ctrl, reason=f"{where}: controller not delegated "
                                 "(absent from cgroup.controllers)")
    err = _try_mkdir(base)
    if err is not None:
        return ControllerSupport(ctrl, reason=f"{where}: not writable ({_errname(err)}) "
                                 f"as uid {uid}")
    if not os.access(os.path.join(base, "cgroup.procs"), os.W_OK):
        return ControllerSupport(ctrl, reason=f"{where}/cgroup.procs: not writable as uid {uid}")
    try:
        enabled = _read(os.path.join(base, "cgroup.subtree_control")).split()
    except OSError as exc:
        return ControllerSupport(ctrl, reason=f"{where}: cannot read cgroup.subtree_control "
                                 f"({_errname(exc)})")
    if ctrl in enabled:
        return ControllerSupport(ctrl, "v2", base)
    if not os.access(os.path.join(base, "cgroup.subtree_control"), os.W_OK):
        return ControllerSupport(ctrl, reason=f"{where}: not enabled in cgroup.subtree_control, "
                                 f"which is not writable as uid {uid}")
    others = _procs(base) - _mine()
    if own != "/" and others:
        return ControllerSupport(ctrl, reason=(
            f"{where}: not enabled for children, and enabling it needs the cgroup free of "
            f"other processes (it holds pid {min(others)}); run inside a delegated scope, "
            "e.g. systemd-run --user --scope -p Delegate=yes"))
    return ControllerSupport(ctrl, "v2", base, needs_enable=True)


def _probe_v1(mounts: dict[str, tuple[str, str]], own: dict[str, str], ctrl: str,
              uid: int) -> ControllerSupport:
    if ctrl not in mounts:
        return ControllerSupport(ctrl, reason=f"cgroup v1 {ctrl}: hierarchy not mounted")
    if ctrl not in own:
        return ControllerSupport(ctrl, reason=f"cgroup v1 {ctrl}: not in /proc/self/cgroup")
    point, root = mounts[ctrl]
    base = _join_under(point, root, own[ctrl])
    if base is None or not os.path.isdir(base):
        return ControllerSupport(ctrl, reason=f"cgroup v1 {ctrl}: own cgroup {own[ctrl]} "
                                 f"not visible under {point}")
    err = _try_mkdir(base)
    if err is not None:
        return ControllerSupport(ctrl, reason=f"cgroup v1 {ctrl}: {base}: not writable "
                                 f"({_errname(err)}) as uid {uid}")
    return ControllerSupport(ctrl, "v1", base)


def probe(*, proc_cgroup: str | None = None, mountinfo: str | None = None) -> CgroupSupport:
    """Which cgroup version serves each controller here, for this user. Never raises
    for a missing feature; makes and removes one empty probe cgroup per base."""
    uid = os.geteuid()
    try:
        proc_cgroup = _read("/proc/self/cgroup") if proc_cgroup is None else proc_cgroup
        mountinfo = _read("/proc/self/mountinfo") if mountinfo is None else mountinfo
    except OSError as exc:
        why = f"cannot read /proc ({_errname(exc)})"
        return CgroupSupport(uid, controllers={c: ControllerSupport(c, reason=why)
                                               for c in LIMITED + HELPERS + ACCOUNTING})
    v1_mounts, v2_mount = _parse_mounts(mountinfo)
    own_v1, own_v2 = _parse_own(proc_cgroup)
    v2_base: str | None = None
    v2_ctrls: tuple[str, ...] = ()
    if v2_mount is not None and own_v2 is not None:
        v2_base = _join_under(v2_mount[0], v2_mount[1], own_v2)
        if v2_base is not None:
            try:
                v2_ctrls = tuple(_read(os.path.join(v2_base, "cgroup.controllers")).split())
            except OSError:
                v2_ctrls = ()
    out: dict[str, ControllerSupport] = {}
    for ctrl in LIMITED + HELPERS + ACCOUNTING:
        reasons = []
        if ctrl not in HELPERS and v2_base is not None:
            got = _probe_v2(v2_base, own_v2 or "/", ctrl, v2_ctrls, uid)
            if got.usable:
                out[ctrl] = got
                continue
            reasons.append(got.reason)
        got = _probe_v1(v1_mounts, own_v1, ctrl, uid)
        if not got.usable and reasons and ctrl not in v1_mounts:
            got = ControllerSupport(ctrl, reason=reasons[0])   # v2 said more than "no v1"
        elif not got.usable and reasons:
            got = ControllerSupport(ctrl, reason=f"{reasons[0]}; {got.reason}")
        out[ctrl] = got
    return CgroupSupport(uid, {k: v[0] for k, v in v1_mounts.items()},
                         v2_mount[0] if v2_mount else None, v2_base, v2_ctrls, out)


_cached: tuple[int, CgroupSupport] | None = None


def probe_cached() -> CgroupSupport:
    """`probe()` once per process (and per euid): a probe makes and removes a cgroup
    in every hierarchy, milliseconds that would otherwise be paid by every run. The
    fork server probes before it forks monitors, so they inherit the answer; should
    the machine change under a long-lived launcher, creating the run's cgroup fails
    and says why, and the run reports that instead of a limit it did not get."""
    global _cached
    if _cached is None or _cached[0] != os.geteuid():
        _cached = (os.geteuid(), probe())
    return _cached[1]
