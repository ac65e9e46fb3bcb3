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
- ``view``: also the policy's part of the filesystem view mounted: PID 1
  forked and waiting with the view built but for the run's own directories
  (sandbox/isolation/prebuilt.py; exec'd programs and Python actions without a terminal,
  sandbox/monitor/pool_stubs.py). Its shape is what that PID 1 builds: the
  early steps of the mount table as they are (kinds, real paths, flags), the
  scratch sizes, the masks outside the run's directories, the network
  section, best_effort, the identity, whether a terminal is bound.

What is per run and never in the key (`PER_RUN`): the run id, argv, the
environment, the descriptors, the audit database, the clock, stdio and, at
every level, what is applied after the run is known (Landlock, seccomp,
rlimits, privileges: the last layers of contain.SEQUENCE). At the ``view``
level the run's own steps (its directories, anything at or under them) are per
run too: they are made from the run's own table once it is known, so two runs
from different work directories share a pool when the rest is the same.

The policy files the run's policy came from (their content hashes,
sandbox.policy.sources) are part of the key: a pool serves only runs of the
same policy files saying the same thing, and a pool of a file that changed is
dropped (pools.Pools.take).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from sandbox.jsontypes import JSON, JSONObject
from sandbox.isolation.context import RunPaths
from sandbox.isolation.mount_steps import Step
from sandbox.isolation.mount_plan import under
from sandbox.isolation.prebuilt import run_dirs, split
from sandbox.policy.model import Policy
from sandbox.policy.plan import FsPlan
from sandbox.policy.sources import SourceFile, Sources, digest as sources_digest
from sandbox.protocol import PolicySource, Spec

LEVELS = ("stub", "limits", "view")

# Spec fields that are the run's own and never shape a prestarted sandbox (at the
# view level, `paths` decide which steps are the run's own: see `view_shape`).
PER_RUN = frozenset({"run_id", "mode", "argv", "env", "ipc_fd", "audit_db", "audit_max_bytes",
                     "init_path", "clock", "stdio"})

# Policy sections applied after the run is known, at every level: never in the key.
LATE_LAYERS = ("syscalls", "audit", "env", "limits.wall", "limits.cpu", "limits.file_size",
               "limits.open_files", "limits.monitor_cpu")



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
               uid: int | None = None, gid: int | None = None, tty: bool = False,
               early: Sequence[Step] | None = None) -> JSONObject:
    """And the policy's part of the view built (sandbox/isolation/prebuilt.py): exactly
    what the pooled PID 1 builds before its run, the early steps of the run's mount
    table (`early`, else computed here: ValueError when the table does not split), and
    what that build reads besides: the scratch sizes, the masks outside the run's
    directories (the /etc copies honour them), the network section (a resolver file),
    best_effort, the identity, whether a terminal is bound. The run's own steps are
    made per run from its own table, so its directories are not in the key at all."""
    dirs = run_dirs(paths)
    if early is None:
        from sandbox.isolation import mount_plan
        got = split(mount_plan.prepare(plan).steps, dirs)
        if got is None:
            raise ValueError("pool key: the plan's view does not split (prebuilt.split)")
        early = got[0]
    return {**limits_shape(policy, namespaces), "level": "view",
            "early": [[s.kind, s.path, s.source, s.is_dir, s.attrs, s.exec] for s in early],
            "masks": _plain(sorted(m for m in plan.masks if not any(under(m, d) for d in dirs))),
            "tmp_size": plan.tmp_size, "scratch_exec": plan.scratch_exec,
            "network": _plain(asdict(policy.network)), "best_effort": policy.best_effort,
            "uid": os.getuid() if uid is None else uid,
            "gid": os.getgid() if gid is None else gid,
            "tty": bool(tty)}


def shape(level: str, policy: Policy, plan: FsPlan, paths: RunPaths, *,
          namespaces: bool = True, tty: bool = False,
          early: Sequence[Step] | None = None) -> JSONObject:
    if level == "stub":
        return stub_shape(policy, namespaces)
    if level == "limits":
        return limits_shape(policy, namespaces)
    if level == "view":
        return view_shape(policy, plan, paths, namespaces=namespaces, tty=tty, early=early)
    raise ValueError(f"unknown pool level {level!r} (known: {', '.join(LEVELS)})")


def key_of(shape_: JSONObject, sources: Sources = ()) -> PoolKey:
    """The hash of a shape and of what the policy files say (sources.digest)."""
    text = json.dumps(_plain(shape_), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    import hashlib   # here: OpenSSL's start-up (~2 ms) is not an exec'd monitor's
    h = hashlib.sha256(text.encode("utf-8", "surrogateescape"))
    h.update(b"\0sources\0" + sources_digest(sources).encode())
    return PoolKey(str(shape_["level"]), h.hexdigest())


def key(level: str, policy: Policy, plan: FsPlan, paths: RunPaths, sources: Sources = (), *,
        namespaces: bool = True, tty: bool = False,
        early: Sequence[Step] | None = None) -> PoolKey:
    return key_of(shape(level, policy, plan, paths, namespaces=namespaces, tty=tty,
                        early=early), sources)


_SCALARS = frozenset({str, int, bool, float})


def _plain(v: object) -> JSON:
    """Tuples as lists, mappings as dicts of plain values; a value JSON has no form for
    is a bug of the caller (TypeError), never hashed by its repr."""
    if type(v) in _SCALARS or v is None:   # most of a shape, without the ABC's check
        return v  # type: ignore[return-value]  # one of _SCALARS
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
             plan: FsPlan | None = None, early: Sequence[Step] | None = None
             ) -> tuple[PoolKey, Sources] | None:
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
               tty=spec.stdio.tty is not None, early=early), sources
