"""Which policy a submitted run gets, and the checks that keep tenants apart.

Every sandbox of the service runs as the same host user, so file modes do not
separate tenants; the sandbox's view does. A run's view holds only what its
resolved policy grants, so two checks on the resolved policy suffice:

1. the token's ceiling (`sandbox.policy.compare.differences`): a run may not
   be looser than the ceiling; the reason is the comparison's, in the 403;
2. the state directory: no grant (a glob by its literal prefix) may lie inside
   <state> or contain it, except the run's own input and output directories.
   That keeps other runs' inputs and outputs, the store, the tokens and the
   audit store out of every view, whatever the ceiling (the admin's included).

The launcher enforces the ceiling again when it prepares the run
(`Lineage.ceiling`, checked on the resolved plan), so a glob that expands
differently by then is still held to it.
"""
from __future__ import annotations

import os
from typing import Any

from sandbox.errors import InputError
from sandbox.policy import globs
from sandbox.policy.model import Policy


class Forbidden(Exception):
    """The run is over its token's ceiling or reaches into the state directory (403)."""


def ceiling_name(token: Any) -> str | None:
    """The policy name a token's runs are held to; None only for an admin token.
    Forbidden for a tenant token without one, whatever made it: fail closed where
    a run is checked or started, rather than run it unbounded (probe2 finding 6)."""
    if token.ceiling:
        return str(token.ceiling)
    if token.admin:
        return None
    raise Forbidden(f"token {token.name!r} has no ceiling; an admin must give it one "
                    "(sandbox token create --ceiling NAME)")


def check_queue(queues: list[str] | None, token_name: str, labels: dict[str, str]) -> None:
    """Forbidden when the token's queue list does not hold the run's queue (the
    queue picks the workers: a tenant kept off the GPU hosts stays off them)."""
    from sandbox.service.models import DEFAULT_QUEUE
    queue = labels.get("queue") or DEFAULT_QUEUE
    if queues is not None and queue not in queues:
        raise Forbidden(f"token {token_name!r} may use the queues {', '.join(queues) or '(none)'}"
                        f", not {queue!r}")


def load_requested(name: str | None, inline: dict[str, Any] | None, fallback: str) -> Policy:
    """The policy a request names (a built-in or registered name, never a path) or
    carries inline (untrusted data: `extends` may name only built-in or
    registered policies). InputError (422) for a bad one."""
    from sandbox.policy.loader import load_policy_cached, parse_policy_data
    from sandbox.policy.search import is_name
    if inline is not None:
        return parse_policy_data(inline, file="<inline policy>")
    ref = name or fallback
    if not is_name(ref):
        raise InputError(f"policy {ref!r}: give a built-in or registered policy name "
                         "(a server path is never accepted)")
    return load_policy_cached(ref)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def state_overlap(resolved: Policy, state: str, own: tuple[str, ...]) -> list[str]:
    """Grants of `resolved` that would put part of `state` other than `own` in view.
    Each grant's real path is the kernel's walk (`real_path`), not os.path.realpath's
    lstat per component: that was half of every submitted run's check, twice a run."""
    from sandbox.policy.variables import real_path
    state = os.path.realpath(state)
    bad: list[str] = []
    fs = resolved.filesystem
    for kind in ("read", "write", "exec"):
        for grant in getattr(fs, kind):
            path = globs.static_prefix(grant) if globs.is_glob(grant) else grant
            path = os.path.normpath(path) if path else "/"
            for p in dict.fromkeys((path, real_path(path))):
                if any(_inside(p, o) for o in own):
                    continue
                if _inside(p, state) or _inside(state, p):
                    bad.append(f"filesystem.{kind}: {grant} reaches the service's state "
                               f"directory {state}")
                    break
    return bad


def check(policy: Policy, ceiling: Policy | None, *, state: str, workdir: str,
          output: str) -> Policy:
    """The resolved policy of a run with these directories; Forbidden when it is
    looser than `ceiling` or reaches into `state`."""
    from sandbox.policy import default_variables, resolve
    from sandbox.policy.compare import differences
    variables = default_variables(workdir, output)
    resolved = resolve(policy, variables)
    why: list[str] = []
    if ceiling is not None:
        why += differences(resolved, resolve(ceiling, variables))
        if why:
            raise Forbidden(f"policy {policy.name!r} is not narrower than or equal to the "
                            f"token's ceiling {ceiling.name!r}: " + "; ".join(why))
    why = state_overlap(resolved, state, (os.path.realpath(workdir), os.path.realpath(output)))
    if why:
        raise Forbidden("; ".join(why))
    return resolved
