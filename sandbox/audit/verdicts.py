"""Verdicts for the audit: the policy engine plus the rules the launcher adds to the plan.

The launcher adds read-only FsRules to the run's plan that are not in the
policy (the sandbox runtime, the caller's action code: `prepare.runtime_rules`).
The kernel layers grant them, so the audit must too, or every import of an
action would be recorded as denied. Policy denies still win over them (the
planner never binds a denied path; Landlock grants only the rule's subtree).

Also computes the *guarded* trees: places where a deny rule names paths the
kernel layers cannot hide, because they did not exist when the view was built
(a glob, or a literal path that was absent) and lie in a writable tree. There
the monitor itself enforces (sandbox.monitor.broker).
"""
from __future__ import annotations

import os
from typing import Iterable

from sandbox.monitor import interned
from sandbox.policy import globs
from sandbox.policy.engine import GRANTS, Engine, Verdict, normalize
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan

WRITABLE_AREAS = ("/tmp", "/dev/shm")   # the sandbox's own writable areas


CACHE_MAX, CACHE_KEY = 8192, 256
# Every run's cache keys, each held once: runs of one program decide the same
# (operation, path) pairs (issue 14: the host's growth per live run).
_KEYS = interned.Table()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or prefix == "/" or path.startswith(prefix + "/")


class AuditEngine:
    """`decide(op, path) -> Verdict`, cached per (op, path).

    The verdicts it returns are *rulings*: `allowed` and `rule` only, with no reason and
    no path (the monitor records and enforces by those two; the reason, a sentence per
    path, is for `sandbox policy check`). A ruling is one object per (allowed, rule) of
    the run, shared by every path it decides: the cache of a run that opened 1,000
    files holds 1,000 keys and a few dozen rulings, not 1,000 sentences (the monitor
    host keeps one cache per live run: issue 14, 64 KiB per run)."""

    def __init__(self, policy: Policy, plan: FsPlan) -> None:
        self.engine = Engine(policy, cache=False)   # one cache of verdicts: ours (below)
        self.extra: list[tuple[str, frozenset[str], str]] = []
        self.extra_parents: dict[str, str] = {}
        for r in plan.rules:
            if r.rule.startswith("filesystem."):
                continue
            kind = "write" if r.write else "exec" if r.exec else "read"
            self.extra.append((normalize(r.path), GRANTS[kind], r.rule))
            p = normalize(r.path)
            while p != "/":
                p = os.path.dirname(p)
                self.extra_parents.setdefault(p, r.rule)
        self._cache: dict[tuple[str, str], Verdict] = {}
        self._rulings: dict[tuple[bool, str], Verdict] = {}
        # directories that hold a launcher rule's path or a parent of one (children_alike)
        self._extra_dirs = frozenset(os.path.dirname(p) for p in
                                     (*(e[0] for e in self.extra), *self.extra_parents))

    def children_alike(self, d: str) -> bool:
        """`Engine.children_alike`, with the launcher's rules: every ``d/NAME`` gets one
        verdict per operation (a rule's path that is a child of `d` breaks that)."""
        return d not in self._extra_dirs and self.engine.children_alike(d)

    def decide(self, op: str, path: str) -> Verdict:
        key = (op, path)
        v = self._cache.get(key)
        if v is None:
            full = self._decide(op, path)
            v = self._rulings.get((full.allowed, full.rule))
            if v is None:   # bounded by the run's rule texts (each names a policy rule)
                v = self._rulings.setdefault((full.allowed, full.rule),
                                             Verdict(full.allowed, full.rule, "", ""))
            # bounded before it grows (issue 11): the child chooses the paths, so only
            # short ones are kept, at most CACHE_MAX of them (~4 MiB at worst)
            if len(path) <= CACHE_KEY:
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()
                self._cache[_KEYS.hold(key)] = v
        return v

    def _decide(self, op: str, path: str) -> Verdict:
        v = self.engine.decide(op, path)
        if v.allowed or not v.rule.startswith("default:") or not self.extra:
            return v
        p = v.path or path
        for prefix, grants, text in self.extra:
            if _under(p, prefix) and op in grants:
                return Verdict(True, text, f"{op} of {p} is granted by the launcher ({text})", p)
        if op == "metadata" and p in self.extra_parents:
            text = f"sandbox: parent of {self.extra_parents[p]}"
            return Verdict(True, text, f"{p} is a parent directory of a granted path", p)
        return v


def guarded_prefixes(policy: Policy, plan: FsPlan) -> tuple[str, ...]:
    """Trees where the monitor must enforce deny rules itself (see module doc).

    A deny pattern whose literal prefix lies in a writable tree guards that
    prefix; a writable tree inside a deny pattern's literal prefix is guarded
    whole. A literal deny path that exists is masked by the mount layer where a
    rule binds it into the view (or hidden by not being bound at all): the
    sandbox cannot remove, rename over or unlink a mask (EBUSY), but the host
    can replace the file, and the kernel then detaches the mask. In a read-only
    tree Landlock still refuses the new file (landlock_around.py); in a tree it
    grants whole -- a host directory bound writable, or any host path bound
    beneath the private /tmp or /dev/shm -- the monitor must enforce, so a mask
    there is guarded too. Not one in the output (a tmpfs of the run's own) nor in
    a copy-on-write work directory (an overlay): there the mask sits on a file of
    the sandbox's own mount, which the host cannot replace.
    """
    writable = [normalize(r.path) for r in plan.rules if r.write] + list(WRITABLE_AREAS)
    private = [normalize(plan.output)] if plan.output else []
    whole = [p for p in (normalize(r.path) for r in plan.rules
                         if (r.write and not r.cow) or any(_under(normalize(r.path), a)
                                                           for a in WRITABLE_AREAS))
             if not any(_under(p, o) for o in private)]
    masks = set(plan.masks)
    out: set[str] = set()
    for pat in policy.filesystem.deny:
        trees = writable
        if globs.is_glob(pat):
            prefix = normalize(globs.static_prefix(pat) or "/")
        else:
            prefix = normalize(pat)
            if prefix in masks or os.path.lexists(prefix):
                trees = whole if prefix in masks else []
        for w in trees:
            if _under(prefix, w):
                out.add(prefix)
            elif _under(w, prefix):
                out.add(w)
    return tuple(sorted(_minimal(out)))


def _minimal(paths: Iterable[str]) -> list[str]:
    keep: list[str] = []
    for p in sorted(paths, key=len):
        if not any(_under(p, k) for k in keep):
            keep.append(p)
    return keep
