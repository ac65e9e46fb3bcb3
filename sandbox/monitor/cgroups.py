"""cgroup limits (memory, processes) applied to a sandbox from outside.

Why from outside: a process must not be trusted to cage itself, and a cgroup
catches every descendant, including `setsid()` + double-fork escapees, so
the monitor can both limit and kill the whole tree.

Flow (see docs/cgroups.md): the monitor calls `create(run_id, limits)` before
it forks the stub; the stub's first act, still in the host's namespaces, is
`run_cgroup.join(os.getpid())` (or `join(0)`, "myself"), so no process of the
sandbox ever exists outside the cgroup and no synchronisation is needed.
After the run the monitor reads `oom_killed()`, `pids_limit_hit()`,
`max_memory()`, then `kill_all()` and `remove()`.

Where: below the caller's *own* cgroup of each controller (never the
hierarchy root, which would escape the limits the caller itself is under).
cgroup v2 is preferred for a controller when the caller's v2 cgroup is
writable and the controller is delegated (or can be enabled); otherwise the
v1 hierarchy of that controller; otherwise nothing, with a human reason, and
the rlimits layer is all that limits the run. "Not available" never raises.

Names are `sandbox-<ownerpid>-<owner start time>-<run_id>`, so
`cleanup_stale()` can tell a cgroup left by a crashed owner (pid gone, or
reused by another process with another start time) from one in use.
"""
from __future__ import annotations

import errno
import os
import re
import time
from typing import Any

from sandbox.errors import SetupError
from sandbox.monitor.cgroup_probe import (  # noqa: F401 - probe API re-exported here
    ACCOUNTING, HELPERS, LIMITED, PREFIX, CgroupSupport, ControllerSupport, _errname, _mine, _procs,
    _read, _start_time, _write, owner_token, probe, probe_cached)
from sandbox.monitor import tree
from sandbox.policy.model import Limits

_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
_OWNED = re.compile(r"^sandbox-(\d+)-(\d+)-(.+)$")


# ------------------------------------------------------------------- the run
class RunCgroup:
    """One sandbox's cgroups (one directory per v1 controller, one shared v2 directory)."""

    def __init__(self, name: str, dirs: dict[str, tuple[str, str]], reason: str = "",
                 limited: tuple[str, ...] = ()) -> None:
        self.name = name
        self.dirs = dirs                       # controller -> (version, directory)
        self.reason = reason                   # what could not be applied, if anything
        self.limited = limited                 # controllers in which a limit was written
        self._stats: dict[str, Any] | None = None

    def apply_limits(self, limits: Limits, overhead: int = 0) -> list[str]:
        """Write `limits` into cgroups made (and joined) before the limits were known,
        as a spare sandbox's are; returns the problems. `applied` then lists what holds."""
        problems, limited = [], []
        for ctrl in LIMITED:
            if ctrl not in self.dirs:
                continue
            version, d = self.dirs[ctrl]
            try:
                _write_limits(ctrl, version, d, limits, overhead)
            except OSError as exc:
                problems.append(f"cgroup {version} {ctrl}: cannot write the limit in {d} "
                                f"({exc.strerror or exc})")
                continue
            if (limits.memory if ctrl == "memory" else limits.processes) is not None:
                limited.append(ctrl)
        self.limited = tuple(limited)
        return problems

    @property
    def applied(self) -> dict[str, str]:
        """Limits enforced by a cgroup: controller -> "v1" | "v2", e.g.
        {"memory": "v1", "pids": "v1"}. A controller joined only for accounting
        (no limit of its kind in the policy) or as a helper (freezer) is not listed."""
        return {c: self.dirs[c][0] for c in self.limited if c in self.dirs}

    @property
    def joined(self) -> dict[str, str]:
        """Every controller the run is placed in (accounting and helpers included)."""
        return {c: v for c, (v, _) in self.dirs.items()}

    @property
    def view(self) -> tuple[str, ...]:
        """What the sandbox's /sys/fs/cgroup shows (sysview.cgroup_tree): its v1
        controllers, and "unified" when it has a v2 cgroup."""
        return tuple(sorted(c for c, (v, _) in self.dirs.items() if v == "v1")) + \
            (("unified",) if any(v == "v2" for v, _ in self.dirs.values()) else ())

    @property
    def paths(self) -> list[str]:
        seen: list[str] = []
        for _, d in self.dirs.values():
            if d not in seen:
                seen.append(d)
        return seen

    def _file(self, ctrl: str, v1name: str, v2name: str) -> str | None:
        if ctrl not in self.dirs:
            return None
        version, d = self.dirs[ctrl]
        return os.path.join(d, v1name if version == "v1" else v2name)

    def join(self, pid: int) -> None:
        """Move `pid` (0 = the calling process) into every cgroup of the run.
        Do it before that process forks: existing children are not moved."""
        for d in self.paths:
            try:
                _write(os.path.join(d, "cgroup.procs"), str(pid))
            except OSError as exc:
                raise SetupError("cgroups", f"cannot move pid {pid or os.getpid()} into {d}: "
                                 f"{exc.strerror}") from None

    def procs(self) -> set[int]:
        out: set[int] = set()
        for d in self.paths:
            out |= _procs(d)
        return out

    def _counter(self, path: str | None, key: str) -> int | None:
        if path is None:
            return None
        try:
            for line in _read(path).splitlines():
                k, _, v = line.partition(" ")
                if k == key:
                    return int(v)
        except (OSError, ValueError):
            return None
        return None

    def stats(self) -> dict[str, Any]:
        """The run's verdicts, read live (or as snapshotted by `remove()`)."""
        if self._stats is not None:
            return dict(self._stats)
        oom = self._counter(self._file("memory", "memory.oom_control", "memory.events"), "oom_kill")
        hit = self._counter(self._file("pids", "pids.events", "pids.events"), "max")
        peak: int | None = None
        path = self._file("memory", "memory.max_usage_in_bytes", "memory.peak")
        if path is not None:
            try:
                peak = int(_read(path).split()[0])
            except (OSError, ValueError, IndexError):
                peak = None
        return {"oom_killed": bool(oom), "pids_limit_hit": bool(hit), "max_memory": peak,
                "cpu_usage": self.cpu_usage()}

    def cpu_usage(self) -> float | None:
        """CPU seconds (user + system) used by every process that ever ran in the run's
        cgroup, those reaped by the kernel at teardown included; None without one."""
        if self._stats is not None:
            return self._stats.get("cpu_usage")
        if "cpuacct" not in self.dirs:
            return None
        version, d = self.dirs["cpuacct"]
        try:
            if version == "v1":
                return int(_read(os.path.join(d, "cpuacct.usage"))) / 1e9
            usec = self._counter(os.path.join(d, "cpu.stat"), "usage_usec")
            return None if usec is None else usec / 1e6
        except (OSError, ValueError):
            return None

    def oom_killed(self) -> bool:
        return bool(self.stats()["oom_killed"])

    def pids_limit_hit(self) -> bool:
        return bool(self.stats()["pids_limit_hit"])

    def max_memory(self) -> int | None:
        value = self.stats()["max_memory"]
        return None if value is None else int(value)

    def kill_all(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the run, forks racing included. True when empty."""
        deadline = time.monotonic() + timeout
        v2 = [d for v, d in self.dirs.values() if v == "v2"]
        if v2:
            try:
                _write(os.path.join(v2[0], "cgroup.kill"), "1")
            except OSError:
                pass  # kernel < 5.14: the signal loop below does it
        freezer = self.dirs["freezer"][1] if "freezer" in self.dirs else None
        while True:
            if freezer is not None:
                _set_freezer(freezer, "FROZEN", deadline)
            pids = self.procs()
            if pids:  # by pidfd: a listed pid may be reaped and reused before the signal
                tree.signal_listed(self.procs)
            if freezer is not None:
                # Always thaw, even when the freeze did not complete by the deadline: a
                # cgroup left FREEZING/FROZEN keeps its tasks (SIGKILL pending) alive
                # in the refrigerator forever, and every later cleanup pays for it.
                _set_freezer(freezer, "THAWED", deadline)
            if not pids:
                return True
            if time.monotonic() > deadline:
                return not self.procs()
            time.sleep(0.005)

    def remove(self, timeout: float = 2.0) -> bool:
        """Snapshot the stats, then rmdir every directory (retrying while tasks drain,
        killing what is left). True when all are gone."""
        if self._stats is None:
            self._stats = self.stats()
        deadline = time.monotonic() + timeout
        left = self.paths
        killed = False
        while left:
            rest = []
            for d in left:
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
                except OSError:
                    rest.append(d)
            left = rest
            if not left or time.monotonic() > deadline:
                break
            if not killed and self.procs():
                killed = True
                self.kill_all(timeout=max(0.1, deadline - time.monotonic()))
            time.sleep(0.01)
        return not left


def _set_freezer(path: str, state: str, deadline: float) -> bool:
    try:
        _write(os.path.join(path, "freezer.state"), state)
        while _read(os.path.join(path, "freezer.state")).strip() != state:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True
    except OSError:
        return False


def _v2_enable(base: str, ctrls: list[str]) -> None:
    """Add `ctrls` to base's cgroup.subtree_control. A non-root cgroup that holds
    processes cannot (EBUSY): when they are all ours, move them into a leaf
    `sandbox-<owner>-launcher` first. Raises OSError with a reason."""
    text = " ".join(f"+{c}" for c in ctrls)
    control = os.path.join(base, "cgroup.subtree_control")
    try:
        _write(control, text)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    procs = _procs(base)
    if procs - _mine():
        raise OSError(errno.EBUSY, f"{base} holds processes that are not ours")
    leaf = os.path.join(base, f"{PREFIX}{owner_token()}-launcher")
    os.makedirs(leaf, exist_ok=True)
    for pid in procs:
        try:
            _write(os.path.join(leaf, "cgroup.procs"), str(pid))
        except ProcessLookupError:
            pass
    _write(control, text)


def create_or_reason(run_id: str, limits: Limits, *, support: CgroupSupport | None = None,
                     pids_overhead: int = 0) -> tuple[RunCgroup | None, str]:
    """Make `sandbox-<owner>-<run_id>` under the own cgroup of each usable controller and
    write the limits. `pids_overhead` is added to `limits.processes` for the monitor's
    own helpers (the stub) that join the cgroup. Returns (None, reason) when nothing
    is usable; the RunCgroup's `.reason` names controllers that could not be used."""
    if not _RUN_ID.match(run_id):
        raise ValueError(f"run id {run_id!r}: want 1-80 characters of [A-Za-z0-9_.-]")
    sup = support or probe()
    if not sup.usable:
        return None, sup.reason or "no cgroup controller is usable"
    name = f"{PREFIX}{owner_token()}-{run_id}"
    reasons = [sup.controllers[c].reason for c in LIMITED if not sup.controllers[c].usable]
    chosen = {c: s for c, s in sup.controllers.items() if s.usable}
    enable = [c for c, s in chosen.items() if s.version == "v2" and s.needs_enable]
    if enable:
        base = chosen[enable[0]].base
        try:
            _v2_enable(str(base), enable)
        except OSError as exc:
            for c in enable:
                reasons.append(f"cgroup v2 {c}: cannot enable in {base}/cgroup.subtree_control"
                               f" ({exc.strerror or exc})")
                del chosen[c]
    dirs: dict[str, tuple[str, str]] = {}
    made: list[str] = []
    for ctrl, s in chosen.items():
        d = os.path.join(str(s.base), name)
        if d not in made:
            try:
                os.mkdir(d)
            except FileExistsError:
                _rmdirs(made)
                raise FileExistsError(errno.EEXIST, f"cgroup {d} already exists "
                                      "(run id reused by this owner)") from None
            except OSError as exc:
                reasons.append(f"cgroup {s.version} {ctrl}: {d}: {_errname(exc)}")
                continue
            made.append(d)
        try:
            _write_limits(ctrl, s.version or "", d, limits, pids_overhead)
        except OSError as exc:
            reasons.append(f"cgroup {s.version} {ctrl}: cannot write the limit in {d} "
                           f"({exc.strerror or exc})")
            continue
        dirs[ctrl] = (s.version or "", d)
    unused = [d for d in made if d not in {p for _, p in dirs.values()}]
    _rmdirs(unused)
    if not any(c in dirs for c in LIMITED + ACCOUNTING):
        _rmdirs([p for _, p in dirs.values()])
        return None, "; ".join(reasons) or "no cgroup controller is usable"
    limited = tuple(c for c in LIMITED if c in dirs and
                    (limits.memory if c == "memory" else limits.processes) is not None)
    return RunCgroup(name, dirs, "; ".join(r for r in reasons if r), limited), ""


def create(run_id: str, limits: Limits, *, support: CgroupSupport | None = None,
           pids_overhead: int = 0) -> RunCgroup | None:
    """`create_or_reason` without the reason (use `probe().reason` to explain a None)."""
    return create_or_reason(run_id, limits, support=support, pids_overhead=pids_overhead)[0]


def _write_limits(ctrl: str, version: str, d: str, limits: Limits, overhead: int) -> None:
    if ctrl == "memory" and limits.memory is not None:
        mem = str(int(limits.memory))
        if version == "v1":
            _write(os.path.join(d, "memory.limit_in_bytes"), mem)
            # memory+swap at the same figure: the limit cannot be dodged by swapping.
            if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
                _write(os.path.join(d, "memory.memsw.limit_in_bytes"), mem)
            else:
                _best_effort(os.path.join(d, "memory.swappiness"), "0")
        else:
            _write(os.path.join(d, "memory.max"), mem)
            if os.path.exists(os.path.join(d, "memory.swap.max")):
                _write(os.path.join(d, "memory.swap.max"), "0")
    elif ctrl == "pids" and limits.processes is not None:
        _write(os.path.join(d, "pids.max"), str(int(limits.processes) + overhead))


def _best_effort(path: str, text: str) -> None:
    try:
        _write(path, text)
    except OSError:
        pass


def _rmdirs(paths: list[str]) -> None:
    for d in paths:
        try:
            os.rmdir(d)
        except OSError:
            pass


# ------------------------------------------------------------- stale cleanup
def _owner_alive(pid: int, start: int) -> bool:
    now = _start_time(pid)
    return now is not None and (start == 0 or now == start)


def cleanup_stale(support: CgroupSupport | None = None) -> list[str]:
    """Remove `sandbox-*` cgroups whose owner is gone (killing their tasks first), and
    empty `sandbox-*` ones of unknown format. A live owner's cgroups, even empty ones
    it just made, are left alone. Returns the removed paths; never raises."""
    sup = support or probe()
    bases = {s.base for s in sup.controllers.values() if s.usable and s.base}
    if sup.v2_base:
        bases.add(sup.v2_base)
    # A stale run's tasks may be frozen (a monitor killed inside kill_all, between
    # FROZEN and THAWED): a frozen task takes no SIGKILL until thawed, so each kill
    # below goes through kill_all's freeze-signal-thaw with the name's freezer cgroup.
    fz = sup.controllers.get("freezer")
    fz_base = fz.base if fz is not None and fz.usable and fz.version == "v1" else None
    removed: list[str] = []
    for base in sorted(str(b) for b in bases):
        try:
            names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
        except OSError:
            continue
        for n in names:
            path = os.path.join(base, n)
            m = _OWNED.match(n)
            if m and _owner_alive(int(m.group(1)), int(m.group(2))):
                continue
            if m and not m.group(3).startswith("launcher"):
                version = "v2" if base == sup.v2_base else "v1"
                dirs = {"_": (version, path)}
                if fz_base and os.path.isdir(os.path.join(fz_base, n)):
                    dirs["freezer"] = ("v1", os.path.join(fz_base, n))
                RunCgroup(n, dirs).kill_all(timeout=1.0)
            try:
                os.rmdir(path)
                removed.append(path)
            except OSError:
                pass
    return removed
