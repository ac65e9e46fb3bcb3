"""`kernel_path`: the host path the kernel would act on, for `decide(resolve_link=...)`.

The engine is pure and decides the path it is given. A caller asking about a
path as a program would spell it (`sandbox policy explain`, the differential
test) must first resolve it the way the kernel does, which lexical
normalisation gets wrong:

- ``..`` is applied *after* following symlinks: with ``link -> /etc``,
  ``/out/link/../x`` is ``/etc/x``, while ``os.path.abspath`` makes it
  ``/out/x``.
- a directory that is missing stops the walk (ENOENT) even when a later
  ``..`` would climb back out of it; `os.path.realpath` carries on lexically.
- inside the sandbox, a directory that is not in the mount view is missing
  too: ``/out/link_to_elsewhere/../x`` fails with ENOENT there, whatever
  ``/out/x`` is. Given the resolved policy, the walk stops at such a
  directory (one the engine does not even let the sandbox stat, or a host
  directory under the private /tmp that no rule binds).
- ``unlink`` (delete) does not follow the last component: deleting a symlink
  removes the link, in the link's directory, whatever it points to.

Where the walk stops, the answer is the path up to the directory it stopped
at, plus the rest spelled lexically when the rest has no ``..`` (so a deny
glob on the file name still shows). This touches the host filesystem
(lstat, readlink), so it lives beside the engine, not in it.

It is a *prediction* for a person or a test (`sandbox policy explain`, the
differential test), never a resolution on behalf of a run: nothing is opened,
bound or decided for a sandbox from its answer, so a link swapped after it ran
changes an explanation, not a view. What a run acts on is resolved by the
kernel at the time it acts: sandbox/isolation/beneath.py (the mount layer,
RESOLVE_NO_SYMLINKS / RESOLVE_IN_ROOT) and sandbox/monitor/root_walk.py (the
monitor, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS).
"""
from __future__ import annotations

import os
from typing import Callable

from sandbox.current_dir import current_dir
from sandbox.policy.model import Policy

NO_FOLLOW_LAST = frozenset({"delete"})
_MAX_LINKS = 40


def _in_view(policy: Policy) -> Callable[[str], bool]:
    """Does this host directory exist in the sandbox's view (so a walk may pass it)?"""
    from sandbox.policy.engine import engine_for
    engine = engine_for(policy)

    def visible(path: str) -> bool:
        v = engine.decide("metadata", path)
        if not v.allowed:
            return False
        # The private areas start empty: a host directory there exists in the view
        # only as a parent of a rule bound beneath it.
        return not v.rule.startswith("private ") or path in engine.parents

    return visible


def kernel_path(path: str, operation: str = "read", cwd: str | None = None,
                policy: Policy | None = None) -> str:
    """Absolute, symlink-free path that OPERATION on PATH reaches: on the host, or,
    given the run's resolved `policy`, inside the sandbox's view (see module doc)."""
    if not path.startswith("/"):
        path = os.path.join(cwd or current_dir(), path)
    visible = _in_view(policy) if policy is not None else None
    follow_last = operation not in NO_FOLLOW_LAST
    parts = [p for p in path.split("/") if p and p != "."]
    resolved, hops = "/", 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            resolved = os.path.dirname(resolved)
            continue
        cand = os.path.join(resolved, name)
        if not parts and not follow_last:
            return cand
        if os.path.islink(cand):
            hops += 1
            if hops > _MAX_LINKS:     # ELOOP: the kernel gives up here
                return cand
            target = os.readlink(cand)
            if target.startswith("/"):
                resolved = "/"
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        if not parts:
            return cand
        # `cand` is a directory the walk must pass through.
        if not os.path.isdir(cand) or (visible is not None and not visible(cand)):
            if ".." in parts:
                return cand
            return os.path.join(cand, *parts)
        resolved = cand
    return resolved
