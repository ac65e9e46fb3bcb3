"""The decision engine: may this sandbox do OPERATION on PATH?

`decide` is a pure function of a *resolved* policy and a path: no system
call, no filesystem access, so the monitor can call it on the audit hot path
and tests can reason about it exactly. Everything that needs the host (glob
expansion, dropping paths that do not exist) lives in `build_plan`
(`sandbox.policy.planner`), the one place that touches the filesystem.

Semantics, in order (see docs/policy-reference.md for the long form):

1. The path is normalised lexically (`os.path.normpath`: `a/./b` -> `a/b`,
   `a/x/../b` -> `a/b`). The kernel resolves `..` *after* following
   symlinks, so a caller that cares passes a canonical path, or injects
   `resolve_link` (path -> canonical path, e.g. `os.path.realpath`), which
   the engine applies before normalising. The CLI does; the engine does not.
   This is the one lexical canonicalisation left, on purpose: the engine must
   stay a pure function, testable without privileges and without touching the
   filesystem. It never decides alone what a run acts on: every path acted on
   for a run is resolved by the kernel (openat2): the mount layer's sources
   and targets (sandbox/isolation/beneath.py) and the monitor's records and
   brokered calls (sandbox/monitor/root_walk.py), and the engine is asked
   about the real path that walk reached.
2. `filesystem.deny` wins over everything (a rule covers the path it names and
   its whole subtree; globs as in `sandbox.policy.globs`).
3. Sandbox-provided areas: `/proc` is the sandbox's own (read, metadata);
   `/dev` holds only null, zero, full, random, urandom, tty and the links
   fd, stdin, stdout, stderr (read, write, metadata) and can be listed;
   `/tmp` and `/dev/shm` are private (read, write, create, delete,
   metadata; no exec). In these areas a policy rule applies only when
   its path lies strictly inside them (a host path bound over the private
   area, e.g. `${OUTPUT}` = /tmp/run1/out), and then it alone decides.
4. Otherwise any allow rule covering the path that grants the operation wins
   (`read` -> read, metadata; `exec` -> read, exec, metadata; `write` ->
   read, write, create, delete, metadata). The deepest literal rule is
   reported, else the first matching glob rule.
5. `metadata` (stat, access, readlink) is also allowed on every parent
   directory of an allow rule: those directories exist in the sandbox's view.
   `read` (listing) too, on them and on `/`: the view's directories hold only
   what the plan grants, so a listing names the view, never the host.
6. The system view (sandbox.isolation.sysview): `/sys/fs/cgroup` shows the
   sandbox's own cgroups, read-only; `/dev/pts` is a private devpts instance
   (`/dev/ptmx` links to its ptmx). `/etc/passwd`, `/etc/group` and
   `/etc/hosts` are generated copies when `/etc` is granted (said in the reason).
7. Else denied: `default: not granted`.

Paths that do not exist yet are decided like any other: by the nearest rule
covering them (creating a file under a `write` rule is allowed).
"""
from __future__ import annotations

import functools
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Callable

from sandbox.errors import PolicyError
from sandbox.policy import globs
from sandbox.policy.credentials import store_of
from sandbox.policy.model import Policy
from sandbox.policy.variables import is_resolved

OPERATIONS = ("read", "write", "create", "delete", "exec", "metadata")

# What each kind of allow rule grants.
GRANTS = {
    "read": frozenset({"read", "metadata"}),
    "exec": frozenset({"read", "exec", "metadata"}),
    "write": frozenset({"read", "write", "create", "delete", "metadata"}),
}
# Which rule kind to report first when several grant the operation on one path.
_PREFERENCE = {"read": ("read", "exec", "write"), "metadata": ("read", "exec", "write"),
               "exec": ("exec",), "write": ("write",), "create": ("write",), "delete": ("write",)}

SANDBOX_AREAS = ("/tmp", "/proc", "/dev")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = ("fd", "stdin", "stdout", "stderr")   # links to the process's own descriptors
_TMP_OPS = frozenset({"read", "write", "create", "delete", "metadata"})
_DEV_NODE_OPS = frozenset({"read", "write", "metadata"})
_READ_OPS = frozenset({"read", "metadata"})

CGROUP_VIEW = "/sys/fs/cgroup"
_GEN = ("; the view shows a generated copy of the host's file (never the host's file "
        "written) in which ")
_GENERATED = {
    "/etc/passwd": _GEN + "the sandbox's user has HOME=/tmp/home and a usable shell",
    "/etc/group": _GEN + "the sandbox's gid has a name",
    "/etc/hosts": _GEN + "the sandbox's host name resolves to loopback",
}

# base.toml's system-view grants, said as such by `sandbox policy explain`
_SYSTEM_VIEW = {
    "filesystem.read: /var/lib/dpkg": " (base's system view: the package database, so dpkg -l "
                                      "and dpkg -s answer; read-only)",
    "filesystem.read: /sys/devices/system/cpu": " (base's system view: the CPU topology, for "
                                                "lscpu, nproc and runtimes sizing thread pools; "
                                                "read-only, nothing else of the host's /sys)",
}

_OPS = frozenset(OPERATIONS)
_CACHE_MAX = 1 << 14
_CACHE_KEY = 256      # longer paths are decided every time, never kept


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: str       # the deciding rule, e.g. "filesystem.deny: /etc/shadow*" or "default: not granted"
    reason: str     # one human sentence
    path: str = ""  # the path decided (normalised, after resolve_link)


def normalize(path: str) -> str:
    """Lexical normalisation; keeps a single leading slash."""
    p = os.path.normpath(path)
    return "/" + p.lstrip("/") if p.startswith("//") else p


def area_of(path: str) -> str | None:
    """"/tmp", "/proc" or "/dev" when `path` is one of them or inside; else None."""
    for a in SANDBOX_AREAS:
        if path == a or path.startswith(a + "/"):
            return a
    return None


def _under(prefix: str) -> str:
    """The string every path strictly below `prefix` starts with ("/" for the root)."""
    return "/" if prefix == "/" else prefix + "/"


def _ancestors(path: str) -> list[str]:
    """path, its parent, ..., "/"."""
    out = [path]
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


_Match = Callable[[str], "globs.GlobMatch | None"]


@functools.lru_cache(maxsize=128)
def _deny_rule(pat: str) -> tuple[bool, str, "_Match | None", str]:
    """(is a glob, its prefix test or normalised path, its matcher, its rule text) for
    a deny pattern. Every string kept is interned: the monitor host builds an engine
    per live run (issue 14: 64 KiB of the host per run), and runs of one policy name the
    same rules, so their engines share these strings."""
    _i = sys.intern
    text = _i(f"filesystem.deny: {pat}")
    if globs.is_glob(pat):
        return True, _under(globs.static_prefix(pat)), globs.compile_rule(pat).fullmatch, text
    store = store_of(normalize(pat))
    if store is not None:
        text = _i(f"credentials: {pat} (a credential store; opt in with "
                  f"[filesystem] allow_credentials = [\"{store}\"])")
    return False, _i(normalize(pat)), None, text


@functools.lru_cache(maxsize=256)
def _kinds(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """One path's {kind: rule text}, shared by the engines whose rules give it the same
    (issue 14: the host keeps an engine per live run; ~2 KiB of these per run)."""
    return dict(items)


@functools.lru_cache(maxsize=128)
def _allow_rule(kind: str, pat: str
                ) -> tuple[bool, str, "_Match | None", str, tuple[str, ...]]:
    """(is a glob, its prefix test or normalised path, its matcher, its rule text, the
    directories above it that become parents of the view) for an allow pattern (strings
    interned, as `_deny_rule`'s)."""
    _i = sys.intern
    text = _i(f"filesystem.{kind}: {pat}")
    if globs.is_glob(pat):
        anchor = _i(globs.static_prefix(pat))
        return (True, _under(anchor), globs.compile_rule(pat).fullmatch, text,
                tuple(_i(a) for a in _ancestors(anchor)))
    p = _i(normalize(pat))
    return False, p, None, text, tuple(_i(a) for a in _ancestors(p)[1:])


@functools.lru_cache(maxsize=64)
def _dirnames(paths: tuple[str, ...]) -> frozenset[str]:
    """The directories `paths` are in: one set for every engine with these paths."""
    return frozenset(sys.intern(os.path.dirname(p)) for p in paths)


class Engine:
    """A resolved policy's filesystem rules, compiled once for fast decisions."""

    def __init__(self, policy: Policy, *, cache: bool = True) -> None:
        """`cache=False`: decide every time (a caller that keeps its own cache of
        verdicts, sandbox.audit.verdicts, would otherwise hold each one twice)."""
        if not is_resolved(policy):
            raise PolicyError("the engine needs a resolved policy (call sandbox.policy.resolve first)",
                              file=policy.source)
        # No reference to `policy` itself: the module cache maps policies to engines
        # weakly, and an engine holding its policy would keep both alive forever.
        self.name, self.source = policy.name, policy.source
        fs = policy.filesystem
        self.scratch_exec = fs.scratch_exec
        self.deny_literal: dict[str, str] = {}
        # Globs are (literal prefix + "/", fullmatch, ...): the cheap prefix test skips
        # most regex matches on the hot path.
        self.deny_globs: list[tuple[str, _Match, str]] = []
        # Every string kept is interned (`_deny_rule`): only the run's own directories
        # are strings of that run. What a rule pattern compiles to is a pure function of
        # its text, kept for the next engine (`_deny_rule`, `_allow_rule`; bounded, least
        # recently used out first): the launcher builds one per run (the plan) and the
        # monitor host another (the audit), and runs of one policy spell the same rules
        # but for their own directories.
        for pat in fs.deny:
            glob, key, match, text = _deny_rule(pat)
            if glob:
                assert match is not None
                self.deny_globs.append((key, match, text))
            else:
                self.deny_literal.setdefault(key, text)
        # path -> kind -> rule text
        self.allow_literal: dict[str, dict[str, str]] = {}
        self.allow_globs: list[tuple[str, _Match, str, str]] = []
        self.parents: dict[str, str] = {}
        for kind in ("read", "write", "exec"):
            for pat in getattr(fs, kind):
                glob, key, match, text, chain = _allow_rule(kind, pat)
                if glob:
                    assert match is not None
                    self.allow_globs.append((key, match, kind, text))
                else:
                    self.allow_literal.setdefault(key, {}).setdefault(kind, text)
                for a in chain:
                    self.parents.setdefault(a, text)
        # each path's kinds, one dict for every engine that spells them alike (never
        # written after this: `_allow` only reads them)
        for key, kinds in self.allow_literal.items():
            self.allow_literal[key] = _kinds(tuple(kinds.items()))
        self._cache: dict[tuple[str, str], Verdict] = {}
        self._paths: dict[str, tuple[str, list[str], str | None]] = {}
        self._caching = cache
        self._alike: dict[str, bool] = {}
        self._deny_dirs: frozenset[str] | None = None   # made at the first children_alike

    def children_alike(self, d: str) -> bool:
        """True when every path ``d/NAME`` (NAME one component, not "." or "..") gets
        the same verdict for each operation, whatever NAME is: no rule, deny, view
        parent or sandbox area names a child of `d`, and no glob's literal prefix
        reaches `d` (conservative: a glob there might match some names). Why: the
        audit's compiled loop then answers a new name in `d` without asking
        (sandbox/_native/notify_fast.c, directory keys). `d`: a normal absolute path."""
        got = self._alike.get(d)
        if got is None:
            got = self._children_alike(d)
            if len(d) <= _CACHE_KEY:     # bounded as the verdicts are (issue 11)
                if len(self._alike) >= _CACHE_MAX:
                    self._alike.clear()
                self._alike[d] = got
        return got

    def _children_alike(self, d: str) -> bool:
        if d == "/" or not d.startswith("/"):
            return False        # "/" holds the sandbox areas, each decided apart
        under = d + "/"
        if area_of(under + "x") is not None or (under + "x").startswith(CGROUP_VIEW + "/") \
                or CGROUP_VIEW.startswith(under):
            return False
        # a rule's path is a child of `d` (the dirnames of every literal key): `parents`
        # holds each allow path's directories, and each glob's anchor with its own; an
        # anchor is decided by the prefix test below all the same. The denies' own
        # directories are one set for the engines of one deny list.
        if d in self.parents:
            return False
        if self._deny_dirs is None:
            self._deny_dirs = _dirnames(tuple(self.deny_literal))
        if d in self._deny_dirs:
            return False
        prefixes = [g[0] for g in self.deny_globs] + [g[0] for g in self.allow_globs]
        return not any(under.startswith(p) for p in prefixes)

    # -- the decision -------------------------------------------------------------------------
    def decide(self, operation: str, path: str, *,
               resolve_link: Callable[[str], str] | None = None) -> Verdict:
        if operation not in _OPS:
            raise ValueError(f"unknown operation {operation!r} (known: {', '.join(OPERATIONS)})")
        if resolve_link is not None:
            path = resolve_link(path)
        key = (operation, path)
        v = self._cache.get(key)
        if v is None:
            v = self._decide(operation, path)
            # a monitor asks about paths the sandbox chose: keep only short ones, so the
            # cache stays a few MiB whatever it sends (issue 11)
            if self._caching and len(path) <= _CACHE_KEY:
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = v
        return v

    def _decide(self, op: str, raw: str) -> Verdict:
        if not raw.startswith("/"):
            return Verdict(False, "default: not an absolute path",
                           f"{raw!r} is not absolute; the engine decides absolute paths only", raw)
        p, chain, denied = self._path(raw)
        if denied is not None:
            return Verdict(False, denied, f"{op} of {p} is denied by {denied} (deny beats every allow)", p)

        area = area_of(p)
        if area is not None:
            return self._decide_area(op, p, chain, area)
        if p == CGROUP_VIEW or p.startswith(CGROUP_VIEW + "/"):
            if op in _READ_OPS:
                return Verdict(True, "sandbox: /sys/fs/cgroup",
                               f"{p} is in the sandbox's own cgroups (its limits and usage), "
                               "shown read-only; nothing of the host's other cgroups", p)
            return Verdict(False, "sandbox: /sys/fs/cgroup",
                           f"{op} of {p} is denied: the sandbox's cgroups are read-only to it", p)
        found = self._allow(op, p, chain, None)
        if found is not None and found[0]:
            note = (_GENERATED.get(p, "") or _SYSTEM_VIEW.get(found[1], "")) if op in _READ_OPS else ""
            return Verdict(True, found[1], f"{op} of {p} is granted by {found[1]}{note}", p)
        if op in _READ_OPS and (p in self.parents or p == "/"):
            rule = "sandbox: root of the view" if p == "/" else f"sandbox: parent of {self.parents[p]}"
            return Verdict(True, rule, f"{p} is a directory of the sandbox's view, so it may be "
                                       f"looked at and listed (a listing shows only what the view "
                                       f"holds, never the host's other entries)", p)
        return self._not_granted(op, p, found)

    def _path(self, raw: str) -> tuple[str, list[str], str | None]:
        """What `_decide` needs of a path whatever the operation: its normal form, its
        ancestors, and the deny rule that covers it (or None). Kept per path while
        verdicts are (`cache`): the launcher's plan asks read, write and exec of each
        path in turn (three of the plan's ~70 decisions per rule path)."""
        pre = self._paths.get(raw)
        if pre is not None:
            return pre
        p = normalize(raw)
        chain = _ancestors(p)
        denied: str | None = None
        for a in chain:
            denied = self.deny_literal.get(a)
            if denied is not None:
                break
        else:
            for prefix, match, text in self.deny_globs:
                if p.startswith(prefix) and match(p):
                    denied = text
                    break
        pre = (p, chain, denied)
        if self._caching and len(raw) <= _CACHE_KEY:   # bounded as the verdicts are
            if len(self._paths) >= _CACHE_MAX:
                self._paths.clear()
            self._paths[raw] = pre
        return pre

    def _decide_area(self, op: str, p: str, chain: list[str], area: str) -> Verdict:
        if area != "/proc":
            found = self._allow(op, p, chain, area)
            if found is not None:   # a host path bound over the sandbox area decides alone
                if found[0]:
                    return Verdict(True, found[1], f"{op} of {p} is granted by {found[1]}", p)
                return self._not_granted(op, p, found)
        if area == "/tmp":
            if op in _TMP_OPS:
                return Verdict(True, "private /tmp", f"{p} is in the sandbox's private /tmp", p)
            if op == "exec" and self.scratch_exec:
                return Verdict(True, "filesystem.scratch_exec",
                               f"{p} is in the private /tmp, executable by filesystem.scratch_exec", p)
            return Verdict(False, "private /tmp",
                           f"{op} of {p} is denied: the private /tmp is not executable "
                           "(filesystem.scratch_exec = true makes it so)", p)
        if area == "/proc":
            if op in _READ_OPS:
                return Verdict(True, "sandbox: /proc", f"{p} is in the sandbox's own /proc", p)
            return Verdict(False, "sandbox: /proc", f"{op} of {p} is denied: the sandbox's /proc is "
                                                    f"read-only to it", p)
        name = p[5:]
        if p == "/dev" and op in _READ_OPS:
            return Verdict(True, "sandbox: /dev", "the sandbox's /dev may be listed", p)
        if name == "shm" or name.startswith("shm/"):
            if op in _TMP_OPS:
                return Verdict(True, "private /dev/shm", f"{p} is in the sandbox's private /dev/shm", p)
            return Verdict(False, "private /dev/shm",
                           f"{op} of {p} is denied: the private /dev/shm is not executable", p)
        link = name.split("/", 1)[0]
        if link == "pts" or name == "ptmx":
            if op in _DEV_NODE_OPS:
                return Verdict(True, "sandbox: /dev/pts",
                               f"{p} is in the sandbox's private /dev/pts (a new devpts instance "
                               "holding only the ptys it opens)", p)
            return Verdict(False, "sandbox: /dev/pts", f"{op} of {p} is not allowed", p)
        if link in DEV_LINKS:
            if op in _DEV_NODE_OPS:
                return Verdict(True, f"sandbox: /dev/{link}",
                               f"{p} refers to one of the process's own descriptors", p)
            return Verdict(False, f"sandbox: /dev/{link}", f"{op} of {p} is not allowed", p)
        if name in DEV_NODES:
            if op in _DEV_NODE_OPS:
                return Verdict(True, f"sandbox: {p}", f"{p} is a device node every sandbox has", p)
            return Verdict(False, f"sandbox: {p}", f"{op} of the device node {p} is not allowed", p)
        if op == "metadata" and p in self.parents:
            rule = f"sandbox: parent of {self.parents[p]}"
            return Verdict(True, rule, f"{p} is a parent directory of a granted path", p)
        return Verdict(False, "default: not granted",
                       f"{p} is not one of the device nodes the sandbox provides "
                       f"({', '.join(DEV_NODES)}) and no rule grants it", p)

    def _allow(self, op: str, p: str, chain: list[str],
               area: str | None) -> tuple[bool, str] | None:
        """(granted, rule text) of the best rule covering `p`; (False, text of a covering
        rule that grants something else) when none grants `op`; None when no rule covers.
        Inside a sandbox area only rules rooted strictly inside it count."""
        covering: str | None = None
        inside = area + "/" if area else None
        for a in chain:
            if inside is not None and not a.startswith(inside):
                break
            kinds = self.allow_literal.get(a)
            if kinds:
                for kind in _PREFERENCE[op]:
                    if kind in kinds:
                        return True, kinds[kind]
                if covering is None:
                    covering = next(iter(kinds.values()))
        for prefix, match, kind, text in self.allow_globs:
            if not p.startswith(prefix):
                continue
            m = match(p)
            if m is None or (inside is not None and not m.root.startswith(inside)):
                continue
            if op in GRANTS[kind]:
                return True, text
            if covering is None:
                covering = text
        return None if covering is None else (False, covering)

    @staticmethod
    def _not_granted(op: str, p: str, found: tuple[bool, str] | None) -> Verdict:
        if found is not None:
            return Verdict(False, "default: not granted",
                           f"no rule grants {op} of {p} ({found[1]} covers it but does not grant {op})", p)
        return Verdict(False, "default: not granted", f"no rule grants {op} of {p}", p)


_engines: dict[int, tuple["weakref.ref[Policy]", Engine]] = {}


def engine_for(policy: Policy) -> Engine:
    """The cached Engine of `policy` (by identity; dropped when the policy is collected)."""
    key = id(policy)
    hit = _engines.get(key)
    if hit is not None and hit[0]() is policy:
        return hit[1]
    eng = Engine(policy)
    def forget(_ref: object, k: int = key) -> None:
        _engines.pop(k, None)
    _engines[key] = (weakref.ref(policy, forget), eng)
    return eng


def decide(policy: Policy, operation: str, path: str, *,
           resolve_link: Callable[[str], str] | None = None) -> Verdict:
    """Verdict for `operation` on `path` under the resolved `policy` (pure; see module doc)."""
    return engine_for(policy).decide(operation, path, resolve_link=resolve_link)

