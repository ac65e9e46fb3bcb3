"""Keep a run inside a ceiling: a policy it may narrow but never widen.

Two callers have a ceiling: a nested spawn (the ceiling is the parent run's
*resolved* policy, so the child can never reach what its parent could not)
and a ``before_spawn`` hook (the ceiling is the policy the hook was given).
A raw comparison of the policy text cannot be the authority: a variable's
spelling hides where it lands (``${OUTPUT}/../../etc`` starts with
``${OUTPUT}``), a symlink planted by the parent turns a path inside its
output into a host directory, and the child's ``${OUTPUT}`` is not the
parent's. So the check runs where the launcher has the child's concrete
policy and plan, right before the kernel layers get them:

1. `derive`: the child's limits, network, syscalls, audit, env.keep,
   tmp_size, output_size, output_inodes and best_effort are met with the ceiling's (the tighter of the
   two, key by key), and the ceiling's deny rules are added to the child's:
   whatever the request said, these can only be as tight or tighter.
2. `confine`: the derived, resolved policy (variables expanded, symlinked
   rule paths with their real spelling added) must be `is_narrower_or_equal`
   to the resolved ceiling, with the run's own fresh WORKDIR and OUTPUT as
   roots that need no cover (the launcher made them, empty, for this run).
3. `check_plan`: every rule of the FsPlan the mount and Landlock layers will
   get is granted, with at least its rights, by the ceiling's engine
   through a ``filesystem.`` rule (not a sandbox-private area), unless it lies
   in an own root, at its path and at its real path (a glob matching a
   symlink binds the link's target); and, for a nested spawn, none lies strictly inside a tree
   the still-running parent can write (it could swap a directory there for a
   symlink between this check and the bind).

Any failure is a `PolicyError` listing every reason: nothing runs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Iterable, Sequence

from sandbox.errors import PolicyError
from sandbox.policy import globs
from sandbox.policy.compare import (AUDIT_ORDER, LIMIT_KEYS, NETWORK_ORDER, PROFILE_ORDER,
                                    VIOLATION_ORDER, WORKDIR_ORDER, differences)
from sandbox.policy.engine import engine_for, normalize
from sandbox.policy.model import NetworkPolicy, Policy
from sandbox.policy.plan import FsPlan


@dataclass(frozen=True)
class Ceiling:
    """What a run may not exceed.

    `policy`: resolved (a nested spawn's parent run), or raw (a hook's input,
    then resolved with the run's own variables). `own_roots`: the run's fresh
    WORKDIR and OUTPUT are its own (true for nested spawns, whose directories
    differ from the parent's); `what` names the ceiling in messages.
    """
    policy: Policy
    own_roots: bool = False
    what: str = "the ceiling policy"


def _tighter(order: dict[str, int], a: str, b: str) -> str:
    return a if order.get(a, 99) <= order.get(b, 99) else b


def _min_limit(a: float | int | None, b: float | int | None) -> float | int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _meet_credentials(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if "*" in b:
        return a
    if "*" in a:
        return b
    return tuple(s for s in a if s in b)


def _meet_network(child: NetworkPolicy, ceiling: NetworkPolicy) -> NetworkPolicy:
    """The tighter mode; for an allowlist, the entries both admit (`netproxy.lattice.meet`):
    a child asking for `host` under an allowlist ceiling gets the ceiling's entries."""
    from sandbox.netproxy.lattice import meet
    mode = _tighter(NETWORK_ORDER, child.mode, ceiling.mode)
    allow: tuple[str, ...] = ()
    deny_private, dns = True, False
    if mode == "allowlist":
        if child.mode == "allowlist" and ceiling.mode == "allowlist":
            allow = meet(child.allow, ceiling.allow)
            deny_private = child.deny_private or ceiling.deny_private
            dns = child.dns and ceiling.dns
        else:
            own = child if child.mode == "allowlist" else ceiling
            allow, deny_private, dns = own.allow, own.deny_private, own.dns
    return replace(child, mode=mode, allow=allow, deny_private=deny_private, dns=dns,
                   unix=tuple(p for p in child.unix
                              if ceiling.mode == "host" or p in ceiling.unix))


def derive(child: Policy, ceiling: Policy) -> Policy:
    """`child` with every non-path setting met with `ceiling`'s and its denies added."""
    met: dict[str, Any] = {k: _min_limit(getattr(child.limits, k), getattr(ceiling.limits, k))
                           for k in LIMIT_KEYS}
    lim = replace(child.limits, **met)
    cs, ps = child.syscalls, ceiling.syscalls
    deny = tuple(dict.fromkeys((*cs.deny, *ps.deny)))
    sys_ = replace(cs, profile=_tighter(PROFILE_ORDER, cs.profile, ps.profile),
                   allow=tuple(n for n in cs.allow if n in ps.allow and n not in deny),
                   deny=deny, on_violation=_tighter(VIOLATION_ORDER, cs.on_violation,
                                                     ps.on_violation))
    fs = replace(child.filesystem,
                 deny=tuple(dict.fromkeys((*child.filesystem.deny, *ceiling.filesystem.deny))),
                 tmp_size=min(child.filesystem.tmp_size, ceiling.filesystem.tmp_size),
                 scratch_exec=child.filesystem.scratch_exec and ceiling.filesystem.scratch_exec,
                 workdir=_tighter(WORKDIR_ORDER, child.filesystem.workdir,
                                  ceiling.filesystem.workdir),
                 allow_credentials=_meet_credentials(child.filesystem.allow_credentials,
                                                     ceiling.filesystem.allow_credentials),
                 output_size=min(child.filesystem.output_size, ceiling.filesystem.output_size),
                 output_inodes=min(child.filesystem.output_inodes,
                                   ceiling.filesystem.output_inodes))
    return child.replace(
        best_effort=child.best_effort and ceiling.best_effort,
        filesystem=fs,
        network=_meet_network(child.network, ceiling.network),
        limits=lim, syscalls=sys_,
        audit=replace(child.audit, files=_tighter(AUDIT_ORDER, child.audit.files,
                                                  ceiling.audit.files),
                      records=min(child.audit.records, ceiling.audit.records)),
        env=replace(child.env, keep=tuple(n for n in child.env.keep if n in ceiling.env.keep)))


def own_roots(paths: Iterable[str]) -> tuple[str, ...]:
    """Each root as given and as its real path (the resolved policy holds both spellings)."""
    out: list[str] = []
    for p in paths:
        for spelling in (normalize(os.path.abspath(p)), os.path.realpath(p)):
            if spelling not in out:
                out.append(spelling)
    return tuple(out)


def confine(child: Policy, ceiling: Policy, *, own: Sequence[str] = (),
            what: str = "the ceiling policy") -> Policy:
    """The derived child policy; PolicyError when its paths reach beyond `ceiling`.

    Both policies resolved (see the module doc)."""
    derived = derive(child, ceiling)
    why = differences(derived, ceiling, own=own)
    if why:
        raise PolicyError(f"policy {child.name!r} is not narrower than or equal to {what} "
                          f"{ceiling.name!r} once resolved: " + "; ".join(why))
    return derived


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _writable_trees(policy: Policy) -> tuple[str, ...]:
    """Where a run of `policy` can create, rename and replace entries (a glob's
    literal prefix stands for the glob: conservative)."""
    return tuple(dict.fromkeys(normalize(globs.static_prefix(w) if globs.is_glob(w) else w)
                               for w in policy.filesystem.write))


def check_plan(plan: FsPlan, ceiling: Policy, *, own: Sequence[str] = (),
               what: str = "the ceiling policy", live_parent: bool = False) -> None:
    """PolicyError unless the ceiling grants every rule of `plan` (module doc, step 3).

    `live_parent`: the ceiling is a run that is still going (a nested spawn's
    parent). Then no rule may lie strictly inside a tree that run can write:
    between this check and the bind it could swap a directory there for a
    symlink to anywhere. (The root of such a tree is fine: it is a mount
    point in the parent's view, which the parent cannot replace.)"""
    engine = engine_for(ceiling)
    trees = _writable_trees(ceiling) if live_parent else ()
    why: list[str] = []
    for rule in plan.rules:
        if _inside(rule.path, own):
            continue
        swappable = [t for t in trees if rule.path != t and _inside(rule.path, (t,))]
        if swappable:
            why.append(f"{rule.path}: inside {swappable[0]}, which the parent run can write "
                       "(it could swap it for a symlink before the bind); grant "
                       f"{swappable[0]} itself or pass the data in the workflow")
            continue
        # The mount layer binds, and Landlock grants, what the path resolves to:
        # a glob matching a symlink reaches its target, which must be granted too.
        real = os.path.realpath(rule.path)
        for path in dict.fromkeys((rule.path, real)):
            if path != rule.path and _inside(path, own):
                continue
            # The copy-on-write work directory's write goes to the run's own layer, never
            # to the host: within a ceiling that has copy-on-write too, it is a read.
            write = rule.write and not (rule.cow and ceiling.filesystem.workdir == "copy-on-write")
            for op, wanted in (("read", rule.read), ("write", write), ("exec", rule.exec)):
                if not wanted:
                    continue
                v = engine.decide(op, path)
                if not (v.allowed and v.rule.startswith("filesystem.")):
                    shown = path if path == rule.path else f"{rule.path} (-> {path})"
                    why.append(f"{shown}: {op} ({v.rule})")
    if why:
        raise PolicyError(f"the filesystem plan reaches beyond {what} {ceiling.name!r}: "
                          + "; ".join(why))
