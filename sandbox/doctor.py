"""`sandbox doctor`: what this machine really offers, found by trying it.

Every kernel feature is *tried* in a throwaway forked child (unshare, a
trivial seccomp filter, a notification listener, a Landlock ruleset query)
instead of guessed from version numbers or sysctls, because containers,
LSM boot options and distribution patches make the guesses wrong. Each probe
is a few milliseconds; one that fails in an unexpected way reports
"error: ..." for its row and never crashes the command.

The verdict is about the `default` policy: it needs user namespaces, seccomp
filters and Landlock. cgroups are optional: without them memory and process
limits come from rlimits only, and the verdict says so.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Callable
from sandbox.isolation import libc, namespaces

REQUIRED = ("user_namespaces", "seccomp", "landlock")

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
SECCOMP_RET_ALLOW = 0x7FFF0000
BPF_RET_K = 0x06  # BPF_RET | BPF_K
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_GET_SECCOMP = 21
LANDLOCK_CREATE_RULESET_VERSION = 1


@dataclass
class Check:
    name: str
    label: str
    ok: bool | None                 # None: the probe itself errored
    detail: str
    required: bool = False
    data: dict[str, Any] = field(default_factory=dict)


def _in_child(fn: Callable[[], str]) -> tuple[bool, str]:
    """Run `fn` in a forked child: (True, its detail) or (False, the error it hit)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out = {"ok": True, "detail": fn()}
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
    uid, gid = os.getuid(), os.getgid()

    def child() -> str:
        libc.unshare(libc.CLONE_NEWUSER | libc.CLONE_NEWPID | libc.CLONE_NEWNS
                     | libc.CLONE_NEWNET)
        namespaces.map_self(uid, gid)
        return f"unshare(user, pid, mount, net) and uid/gid map work as uid {uid}"

    ok, detail = _in_child(child)
    if not ok:
        limit = _read_first("/proc/sys/user/max_user_namespaces")
        extra = _read_first("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        detail += f"; max_user_namespaces={limit}"
        if extra is not None:
            detail += f", apparmor_restrict_unprivileged_userns={extra}"
    return Check("user_namespaces", "user namespaces", ok, detail, required=True)


def _allow_all() -> tuple[ctypes.Array, ctypes.Structure]:
    insn = struct.pack("HBBI", BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    buf = ctypes.create_string_buffer(insn, len(insn))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    return buf, SockFprog(1, ctypes.cast(buf, ctypes.c_void_p))


def probe_seccomp() -> Check:
    mode = _status_field("Seccomp")

    def child() -> str:
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
        buf, prog = _allow_all()
        libc.syscall("seccomp", SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog))
        return "a BPF filter installs"

    ok, detail = _in_child(child)
    modes = {"0": "none", "1": "strict", "2": "filter"}
    detail += f" (this process: seccomp mode {modes.get(mode or '', mode)})"
    return Check("seccomp", "seccomp filters", ok, detail, required=True,
                 data={"current_mode": mode})


def probe_seccomp_notify() -> Check:
    actions = (_read_first("/proc/sys/kernel/seccomp/actions_avail") or "").split()

    def child() -> str:
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
        buf, prog = _allow_all()
        fd = libc.syscall("seccomp", SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                          ctypes.byref(prog))
        return f"a filter with NEW_LISTENER returned listener fd {fd}"

    ok, detail = _in_child(child)
    return Check("seccomp_notify", "seccomp user notification", ok, detail,
                 data={"user_notif_in_actions_avail": "user_notif" in actions})


def probe_landlock() -> Check:
    try:
        from sandbox.isolation import landlock
        abi_fn = getattr(landlock, "abi_version", None)
    except ImportError:
        abi_fn = None
    source = "sandbox.isolation.landlock.abi_version"
    if abi_fn is not None:
        try:
            abi = int(abi_fn())
        except Exception:  # noqa: BLE001 - fall back to our own syscall below
            abi_fn = None
    if abi_fn is None:
        source = "landlock_create_ruleset(NULL, 0, VERSION)"
        try:
            abi = libc.syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                               ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
        except OSError as exc:
            why = {errno.EOPNOTSUPP: "disabled at boot (add landlock to the lsm= kernel option)",
                   errno.ENOSYS: "not built into this kernel"}.get(exc.errno or 0, exc.strerror)
            return Check("landlock", "Landlock", False, f"unavailable: {why}", required=True,
                         data={"abi": 0})
    if abi <= 0:
        return Check("landlock", "Landlock", False, "unavailable", required=True, data={"abi": 0})
    return Check("landlock", "Landlock", True, f"ABI {abi} ({source})", required=True,
                 data={"abi": abi})


def probe_no_new_privs() -> Check:
    try:
        current = libc.prctl(PR_GET_NO_NEW_PRIVS)
    except OSError as exc:
        return Check("no_new_privs", "no_new_privs", False,
                     f"prctl(PR_GET_NO_NEW_PRIVS) failed: {exc.strerror}")
    return Check("no_new_privs", "no_new_privs", True,
                 f"available (this process: {current})", data={"current": current})


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
                 f"`mount -o remount,favordynmods {where}` (system-wide; docs/benchmarks.md)")


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
