"""`sandbox doctor`: what this machine really offers, found by trying it.

Every kernel feature is *tried* in a throwaway forked child instead of
guessed from version numbers or sysctls, because containers, LSM boot options
and distribution patches make the guesses wrong. The child runs the real layer
functions that `contain.SEQUENCE` and the stub run, with the default policy
(nothing granted): `namespaces.enter` then `namespaces.apply` as PID 1,
`privileges.apply`, `seccomp.apply` (the default profile's filter, then with a
notification listener), `landlock.apply`. So a "yes" means a run's layer works
here, and a change to a layer changes its row: there is no second copy of the
system calls to drift. Each probe is a few milliseconds; one that fails in an
unexpected way reports "error: ..." for its row and never crashes the command.

The verdict is about the `default` policy: it needs user namespaces, seccomp
filters and Landlock. cgroups are optional: without them memory and process
limits come from rlimits only, and the verdict says so.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from sandbox.errors import SetupError
from sandbox.isolation import landlock, libc, namespaces, privileges, seccomp
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.policy.model import NetworkPolicy, Policy
from sandbox.policy.plan import FsPlan

REQUIRED = ("user_namespaces", "seccomp", "landlock")

PR_GET_NO_NEW_PRIVS = 39


@dataclass
class Check:
    name: str
    label: str
    ok: bool | None                 # None: the probe itself errored
    detail: str
    required: bool = False
    data: dict[str, Any] = field(default_factory=dict)


def probe_context(keep: int, policy: Policy | None = None,
                  audit_files: str = "none") -> ContainContext:
    """What a layer receives, for a throwaway probe child: the default policy
    unless told, nothing granted, the system's temporary directory as every
    path, not in namespaces (so `privileges` drops nothing it cannot), and the
    report pipe `keep` kept open."""
    tmp = tempfile.gettempdir()
    return ContainContext(policy=policy or Policy(), paths=RunPaths(tmp, tmp, tmp, tmp),
                          fs_plan=FsPlan(), ipc_fd=keep, monitor_fd=keep, keep_fds=(keep,),
                          outer_uid=os.getuid(), outer_gid=os.getgid(), namespaces=False,
                          audit_files=audit_files)


def _in_child(fn: Callable[[int], str]) -> tuple[bool, str]:
    """Run `fn(report_fd)` in a forked child: (True, its detail) or (False, the
    error it hit). `fn` must keep `report_fd` open (probe_context does)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out = {"ok": True, "detail": fn(w)}
            except SetupError as exc:
                out = {"ok": False, "detail": str(exc)}
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, "?")
                out = {"ok": False, "detail": f"{exc.strerror or exc} ({name})",
                       "errno": exc.errno}
            except BaseException as exc:  # reported, not swallowed
                out = {"ok": None, "detail": f"error: {type(exc).__name__}: {exc}"}
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        raise RuntimeError(f"probe child died (signal {sig}, status {status})")
    out = json.loads(b"".join(chunks))
    if out["ok"] is None:
        raise RuntimeError(out["detail"].removeprefix("error: "))
    return bool(out["ok"]), str(out["detail"])




def _read_first(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _status_field(name: str) -> str | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


# ----------------------------------------------------------------- the probes
def probe_kernel() -> Check:
    u = os.uname()
    return Check("kernel", "kernel", True, f"{u.release} {u.machine}",
                 data={"release": u.release, "machine": u.machine})


def probe_user_namespaces() -> Check:
    uid = os.getuid()

    def child(keep: int) -> str:
        ctx = probe_context(keep)
        namespaces.enter(ctx)            # the stub's: unshare, uid/gid map, per-user bounds
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                     # PID 1 of the new namespaces
            try:
                namespaces.apply(ctx)    # the first layer of contain.SEQUENCE
                os.write(w, b"ok")
            except BaseException as exc:  # reported, not swallowed
                os.write(w, str(exc).encode()[:4000])
            finally:
                os._exit(0)
        os.close(w)
        got = os.read(r, 4096)
        os.close(r)
        os.waitpid(pid, 0)
        if got != b"ok":
            raise SetupError("namespaces", got.decode(errors="replace") or "PID 1 died")
        return (f"unshare(user, pid, mount, net, ipc, uts, cgroup), uid/gid map and "
                f"the namespaces layer work as uid {uid}")

    ok, detail = _in_child(child)
    if not ok:
        limit = _read_first("/proc/sys/user/max_user_namespaces")
        extra = _read_first("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        detail += f"; max_user_namespaces={limit}"
        if extra is not None:
            detail += f", apparmor_restrict_unprivileged_userns={extra}"
    return Check("user_namespaces", "user namespaces", ok, detail, required=True)


def probe_seccomp() -> Check:
    mode = _status_field("Seccomp")

    def child(keep: int) -> str:
        # network "host", no audit, errno on violation: a plain filter, no listener
        ctx = probe_context(keep, Policy(network=NetworkPolicy(mode="host")))
        privileges.apply(ctx)
        seccomp.apply(ctx)
        return f"the default profile's filter installs ({ctx.active[-1]})"

    ok, detail = _in_child(child)
    modes = {"0": "none", "1": "strict", "2": "filter"}
    detail += f" (this process: seccomp mode {modes.get(mode or '', mode)})"
    return Check("seccomp", "seccomp filters", ok, detail, required=True,
                 data={"current_mode": mode})


def probe_seccomp_notify() -> Check:
    actions = seccomp.actions_available()

    def child(keep: int) -> str:
        from sandbox.monitor.seccomp_notify import notif_sizes
        sizes = notif_sizes()            # what the monitor asks first
        ctx = probe_context(keep, audit_files="all")
        privileges.apply(ctx)
        seccomp.apply(ctx)
        if ctx.listener_fd is None:
            raise SetupError("seccomp", "no listener returned")
        # Closed at once: nothing answers here, and a notified call would wait for it
        # (with the listener gone the kernel fails such calls instead).
        os.close(ctx.listener_fd)
        return (f"the audited filter returned a listener (notif {sizes.notif} bytes, "
                f"resp {sizes.resp})")

    ok, detail = _in_child(child)
    return Check("seccomp_notify", "seccomp user notification", ok, detail,
                 data={"user_notif_in_actions_avail": "user_notif" in actions})


def probe_landlock() -> Check:
    try:
        abi = landlock.probe_abi()
    except OSError as exc:
        why = {errno.EOPNOTSUPP: "disabled at boot (add landlock to the lsm= kernel option)",
               errno.ENOSYS: "not built into this kernel"}.get(exc.errno or 0, exc.strerror)
        return Check("landlock", "Landlock", False, f"unavailable: {why}", required=True,
                     data={"abi": 0})

    def child(keep: int) -> str:
        ctx = probe_context(keep)
        privileges.apply(ctx)
        landlock.apply(ctx)
        return f"ABI {abi}: the default policy's ruleset installs ({ctx.active[-1]})"

    ok, detail = _in_child(child)
    return Check("landlock", "Landlock", ok, detail, required=True,
                 data={"abi": abi if ok else 0})


def probe_no_new_privs() -> Check:
    try:
        current = libc.prctl(PR_GET_NO_NEW_PRIVS)
    except OSError as exc:
        return Check("no_new_privs", "no_new_privs", False,
                     f"prctl(PR_GET_NO_NEW_PRIVS) failed: {exc.strerror}")

    def child(keep: int) -> str:
        privileges.apply(probe_context(keep))
        if _status_field("NoNewPrivs") != "1":
            raise SetupError("privileges", "no_new_privs is not set after the layer")
        return "the privileges layer sets it"

    ok, detail = _in_child(child)
    return Check("no_new_privs", "no_new_privs", ok, f"{detail} (this process: {current})",
                 data={"current": current})


def probe_cgroups() -> list[Check]:
    from sandbox.monitor import cgroups
    sup = cgroups.probe()
    rows = []
    for ctrl in ("memory", "pids", "cpuacct", "freezer"):
        s = sup.controllers[ctrl]
        detail = f"{s.version} at {s.base}" if s.usable else s.reason
        if s.usable and s.needs_enable:
            detail += " (will be enabled in cgroup.subtree_control)"
        rows.append(Check(f"cgroup_{ctrl}", f"cgroup {ctrl}", s.usable, detail,
                          data=s.to_dict()))
    v2 = ", ".join(sup.v2_controllers) or "none"
    rows.append(Check("cgroup_hierarchies", "cgroup hierarchies", True,
                      f"v1: {', '.join(sorted(sup.v1_mounts)) or 'none'}; "
                      f"v2: {sup.v2_mount or 'not mounted'} (controllers here: {v2})",
                      data=sup.to_dict()))
    return rows


def probe_tool(name: str, label: str) -> Check:
    path = shutil.which(name)
    return Check(name, label, path is not None, path or "not installed")


def probe_cgroup_attach() -> Check:
    """A performance row, not a requirement: how costly joining a cgroup is here.

    Moving a process into a cgroup takes the kernel's threadgroup lock for
    writing, which waits for an RCU grace period (measured here: 5-20 ms per
    sandbox) unless the cgroup2 mount has `favordynmods`, a system-wide
    switch that makes it ~0.2 ms (also for v1 hierarchies). sandbox never
    changes it for you."""
    with open("/proc/mounts") as f:
        cg2 = [line.split() for line in f if " cgroup2 " in line]
    if not cg2:
        return Check("cgroup_attach", "cgroup attach (speed)", None, "no cgroup2 mount")
    where, options = cg2[0][1], cg2[0][3].split(",")
    if "favordynmods" in options:
        return Check("cgroup_attach", "cgroup attach (speed)", True,
                     f"fast: {where} has favordynmods")
    return Check("cgroup_attach", "cgroup attach (speed)", False,
                 f"slow (an RCU grace period per sandbox): to speed up, as root, "
                 f"`mount -o remount,favordynmods {where}` (system-wide; docs/benchmarks-journal.md)")


PROBES: list[tuple[str, Callable[[], Check | list[Check]]]] = [
    ("kernel", probe_kernel),
    ("user_namespaces", probe_user_namespaces),
    ("seccomp", probe_seccomp),
    ("seccomp_notify", probe_seccomp_notify),
    ("landlock", probe_landlock),
    ("no_new_privs", probe_no_new_privs),
    ("cgroups", probe_cgroups),
    ("cgroup_attach", probe_cgroup_attach),
    ("bwrap", lambda: probe_tool("bwrap", "bubblewrap")),
    ("firejail", lambda: probe_tool("firejail", "firejail")),
]


# ------------------------------------------------------------------ verdict
def collect() -> dict[str, Any]:
    """Every probe's rows plus the verdict, as JSON-ready data."""
    checks: list[Check] = []
    for name, fn in PROBES:
        try:
            got = fn()
            checks.extend(got if isinstance(got, list) else [got])
        except Exception as exc:  # noqa: BLE001 - a broken probe is a row, not a crash
            checks.append(Check(name, name.replace("_", " "), None,
                                f"error: {type(exc).__name__}: {exc}",
                                required=name in REQUIRED))
    by_name = {c.name: c for c in checks}
    missing = [n for n in REQUIRED if not (n in by_name and by_name[n].ok)]
    cg_ok = [c for c in ("memory", "pids") if by_name.get(f"cgroup_{c}", None)
             and by_name[f"cgroup_{c}"].ok]
    if missing:
        verdict = ("the default policy can NOT be enforced here: missing "
                   + ", ".join(missing))
    else:
        verdict = "the default policy can be enforced here"
        if len(cg_ok) == 2:
            verdict += "; memory and process limits use cgroups"
        elif cg_ok:
            verdict += f"; only the {cg_ok[0]} limit uses cgroups, the rest come from rlimits"
        else:
            verdict += "; no writable cgroups: memory and process limits come from rlimits only"
    return {"checks": {c.name: asdict(c) for c in checks}, "enforceable": not missing,
            "missing": missing, "verdict": verdict}


def render(facts: dict[str, Any]) -> str:
    rows = list(facts["checks"].values())
    width = max(len(r["label"]) for r in rows) + 2
    lines = ["sandbox doctor: what this machine offers", ""]
    for r in rows:
        state = {True: "yes", False: "no", None: "ERROR"}[r["ok"]]
        if r["name"] in ("kernel", "cgroup_hierarchies"):
            state = ""
        req = "*" if r["required"] else " "
        lines.append(f"{req} {r['label']:<{width}}{state:<6}{r['detail']}")
    lines += ["", "(* required by the default policy)", f"verdict: {facts['verdict']}"]
    return "\n".join(lines)
