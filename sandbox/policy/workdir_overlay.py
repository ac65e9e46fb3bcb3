"""Where `workdir = "copy-on-write"` makes the work directory writable, for the launcher
(which mounts the overlay, sandbox/launcher/workdir_cow.py) and for `policy explain`.

One decision in one place, so that what `explain` says a run may write is what the
launcher grants it (a new-user probe: explain said "denied" of a write the run made
through its overlay).
"""
from __future__ import annotations

import os
from dataclasses import replace

from sandbox.policy.engine import Verdict, decide, normalize
from sandbox.policy.model import Policy

WRITE_OPS = frozenset({"write", "create", "delete"})
RULE = 'filesystem.workdir: "copy-on-write" (${WORKDIR})'


def overlaid(policy: Policy, workdir: str) -> str | None:
    """The real path of the work directory the run will overlay, or None: the mode is
    "direct", the directory is "/", a rule already grants writing it (`--write .`
    wins: the host's directory, directly), or the policy does not let it be read."""
    if policy.filesystem.workdir != "copy-on-write":
        return None
    work = os.path.realpath(workdir)
    if work == "/" or decide(policy, "write", work).allowed:
        return None
    return work if decide(policy, "read", work).allowed else None


def with_write(policy: Policy, work: str) -> Policy:
    """`policy` with the overlaid work directory writable (what engine, audit and
    Landlock are given)."""
    fs = policy.filesystem
    return policy.replace(filesystem=replace(fs, write=tuple(fs.write) + (work,)))


def explain(policy: Policy, workdir: str, operation: str, path: str, verdict: Verdict
            ) -> Verdict:
    """`verdict`, or, for a write, create or delete beneath an overlaid work directory
    that only the overlay allows, an allowing verdict saying where the change goes."""
    if verdict.allowed or operation not in WRITE_OPS:
        return verdict
    work = overlaid(policy, workdir)
    p = normalize(path)
    if work is None or not (p == work or p.startswith(work.rstrip("/") + "/")):
        return verdict
    if not decide(with_write(policy, work), operation, p).allowed:
        return verdict      # a deny rule, a masked path: the overlay does not change it
    return Verdict(True, RULE,
                   f"{operation} of {p} goes to the run's own layer over the work directory "
                   f"{work}: the host's file stays untouched (the changes are copied to "
                   "${OUTPUT}/workdir.changes when the run ends)", p)
