"""The pool key: what a prestarted sandbox was prepared for, as one stable hash.

A warm pool (sandbox.monitor.pools) may serve a run only with a sandbox
whose prepared state is exactly what a cold start of that run would have
built. So the key is computed from the run's own *resolved* plan (variables
substituted, command-line grants and ceilings applied, globs expanded against
the host now, by the launcher, for this run) and names every part of it that
shapes the state prepared before the run is known, at the level the pool
prepares:

- ``stub``: the namespaces are entered and the cgroups made (without
  limits): namespaces on or off, the network namespace own or the host's.
  This is today's spare (sandbox/monitor/spare.py).
- ``limits``: also the cgroup limits written (memory, processes).
- ``view``: also the filesystem view mounted (the whole plan, the network
  section, best_effort, the identity, whether a terminal is bound): PID 1
  forked and waiting after the mount layer. Not built (docs/architecture.md
  "Warm pools" says what it would take); the key is here so that its
  late-bound parts are named and tested now.

What is per run and never in the key (`PER_RUN`): the run id, argv, the
environment, the descriptors, the audit database, the clock, stdio and, at
every level, what is applied after the run is known (Landlock, seccomp,
rlimits, privileges: the last layers of contain.SEQUENCE). At the ``view``
level the run's own directories (rundir, workdir, output, tmp) are per run
too: they appear in the key as ``${RUNDIR}``, ``${WORKDIR}``, ``${OUTPUT}``,
``${TMP}``, with their relations to each other and to every rule and mask
(which plan paths are at or above them), since those decide where a
late-bound mount would go.

The policy files the run's policy came from (their content hashes,
sandbox.policy.sources) are part of the key: a pool serves only runs of the
same policy files saying the same thing, and a pool of a file that changed is
dropped (pools.Pools.take).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from typing import Mapping

from sandbox.jsontypes import JSON, JSONObject
from sandbox.isolation.context import RunPaths
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan
from sandbox.policy.sources import SourceFile, Sources, digest as sources_digest
from sandbox.protocol import PolicySource, Spec

LEVELS = ("stub", "limits", "view")

# Spec fields that are the run's own and never shape a prestarted sandbox (at the
# view level, `paths` is abstracted rather than left out: see `view_shape`).
PER_RUN = frozenset({"run_id", "mode", "argv", "env", "ipc_fd", "audit_db", "audit_max_bytes",
                     "init_path", "clock", "stdio", "cgroup_memory", "cgroup_view"})

# Policy sections applied after the run is known, at every level: never in the key.
LATE_LAYERS = ("syscalls", "audit", "env", "limits.wall", "limits.cpu", "limits.file_size",
               "limits.open_files", "limits.monitor_cpu")

ROOTS = ("RUNDIR", "WORKDIR", "OUTPUT", "TMP")


@dataclass(frozen=True, order=True)
class PoolKey:
    level: str
    digest: str      # sha256 hex of the canonical shape and the policy files' contents

    def __str__(self) -> str:
        return f"{self.level}:{self.digest[:16]}"


def stub_shape(policy: Policy, namespaces: bool = True) -> JSONObject:
    """What a prestarted stub has done: joined empty cgroups, entered the namespaces."""
    return {"level": "stub", "namespaces": bool(namespaces),
            "net": "host" if policy.network.mode == "host" else "own"}


def limits_shape(policy: Policy, namespaces: bool = True) -> JSONObject:
    """And the cgroup limits written (the controllers of cgroups.LIMITED)."""
    return {**stub_shape(policy, namespaces), "level": "limits",
            "memory": policy.limits.memory, "processes": policy.limits.processes}


def view_shape(policy: Policy, plan: FsPlan, paths: RunPaths, *, namespaces: bool = True,
               uid: int | None = None, gid: int | None = None, tty: bool = False
               ) -> JSONObject:
    """And the filesystem view mounted, with the run's own directories abstracted."""
    roots = _roots(paths)
    rules = [{**asdict(r), "path": abstract(r.path, roots), "real": abstract(r.real, roots)}
             for r in plan.rules]
    for r in rules:
        r.pop("rule")   # the policy's wording of a grant: documentation, not state
    # canonical order: a random run directory name must not reorder the list (parents
    # still come before children: a parent's path sorts before its children's)
    rules.sort(key=lambda r: (r["path"], json.dumps(r, sort_keys=True)))
    masks = sorted(abstract(m, roots) for m in plan.masks)
    literal = [r.path for r in plan.rules] + list(plan.masks)
    return {**limits_shape(policy, namespaces), "level": "view",
            "rules": _plain(rules), "masks": _plain(masks),
            "output": abstract(plan.output, roots) if plan.output else "",
            "tmp_size": plan.tmp_size, "scratch_exec": plan.scratch_exec,
            "output_size": plan.output_size, "output_inodes": plan.output_inodes,
            "relations": _plain(_relations(roots, literal)),
            "network": _plain(asdict(policy.network)),
            "best_effort": policy.best_effort, "workdir_mode": policy.filesystem.workdir,
            "uid": os.getuid() if uid is None else uid,
            "gid": os.getgid() if gid is None else gid,
            "tty": bool(tty)}


def shape(level: str, policy: Policy, plan: FsPlan, paths: RunPaths, *,
          namespaces: bool = True, tty: bool = False) -> JSONObject:
    if level == "stub":
        return stub_shape(policy, namespaces)
    if level == "limits":
        return limits_shape(policy, namespaces)
    if level == "view":
        return view_shape(policy, plan, paths, namespaces=namespaces, tty=tty)
    raise ValueError(f"unknown pool level {level!r} (known: {', '.join(LEVELS)})")


def key_of(shape_: JSONObject, sources: Sources = ()) -> PoolKey:
    """The hash of a shape and of what the policy files say (sources.digest)."""
    text = json.dumps(_plain(shape_), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    h = hashlib.sha256(text.encode("utf-8", "surrogateescape"))
    h.update(b"\0sources\0" + sources_digest(sources).encode())
    return PoolKey(str(shape_["level"]), h.hexdigest())


def key(level: str, policy: Policy, plan: FsPlan, paths: RunPaths, sources: Sources = (), *,
        namespaces: bool = True, tty: bool = False) -> PoolKey:
    return key_of(shape(level, policy, plan, paths, namespaces=namespaces, tty=tty), sources)


# -- the run's own directories -------------------------------------------------------
def _roots(paths: RunPaths) -> list[tuple[str, str]]:
    """(host path, name) of the run's own directories, longest first, each under its
    absolute and its real spelling (plan paths are real paths)."""
    out: dict[str, str] = {}
    for name, p in zip(ROOTS, (paths.rundir, paths.workdir, paths.output, paths.tmp)):
        if not p:
            continue
        for spelling in (os.path.abspath(p), os.path.realpath(p)):
            if spelling != "/":
                out.setdefault(spelling.rstrip("/"), name)
    return sorted(out.items(), key=lambda kv: (-len(kv[0]), kv[0]))


def abstract(path: str, roots: list[tuple[str, str]]) -> str:
    """`path` with the longest run directory at or above it replaced by ``${NAME}``."""
    for root, name in roots:
        if path == root:
            return "${" + name + "}"
        if path.startswith(root + "/"):
            return "${" + name + "}" + path[len(root):]
    return path


def _relations(roots: list[tuple[str, str]], literal: list[str]) -> dict[str, list[str]]:
    """For each run directory: the plan paths (abstracted) and the other run directories
    at or above it: where its late-bound mount would land decides on them."""
    rel: dict[str, set[str]] = {}
    for root, name in roots:
        above = {abstract(p, roots) for p in literal
                 if p == "/" or root == p or root.startswith(p.rstrip("/") + "/")}
        above |= {"${" + other + "}" for r, other in roots
                  if other != name and root.startswith(r + "/")}
        rel.setdefault(name, set()).update(above)
    return {name: sorted(v) for name, v in sorted(rel.items())}


def _plain(v: object) -> JSON:
    """Tuples as lists, mappings as dicts of plain values; a value JSON has no form for
    is a bug of the caller (TypeError), never hashed by its repr."""
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"pool key: {type(v).__name__} has no JSON form")


# -- from the spec the monitor host receives -----------------------------------------------
def sources_of(wire: list[PolicySource]) -> Sources:
    return tuple(SourceFile(path=s.path, sha256=s.sha256, ino=s.ino, dev=s.dev, size=s.size,
                            mtime_ns=s.mtime_ns, ctime_ns=s.ctime_ns, is_dir=s.is_dir)
                 for s in wire)


def for_spec(spec: Spec, level: str, policy: Policy | None = None,
             plan: FsPlan | None = None) -> tuple[PoolKey, Sources] | None:
    """The key of the run `spec` describes, and the files its policy came from; None when
    the run cannot be pooled (no namespaces: best effort without a user namespace).
    `policy` and `plan`: the spec's own, when the caller has parsed them already (the
    monitor host's run context): parsed again here otherwise."""
    if not spec.namespaces:
        return None
    policy = Policy.from_dict(spec.policy) if policy is None else policy
    plan = FsPlan.from_dict(spec.fs_plan) if plan is None else plan
    paths = RunPaths(rundir=spec.paths.rundir, workdir=spec.paths.workdir,
                     output=spec.paths.output, tmp=spec.paths.tmp)
    sources = sources_of(spec.policy_sources)
    return key(level, policy, plan, paths, sources, namespaces=True,
               tty=spec.stdio.tty is not None), sources
