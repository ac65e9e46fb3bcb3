"""What a run's seccomp notifications are dispatched by: made once per syscall policy.

WHY shared: the monitor host watches every run of a launcher, and issue 14 allows it
64 KiB per live run. The resolved syscall table and the map of audited calls are the
same for every run of one syscall policy, audit level and network mode, so they are
built once (an lru_cache) and read, never written, by each run's `AuditLoop`
(sandbox/monitor/notify_loop.py).
"""
from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Mapping

from sandbox.isolation import seccomp
from sandbox.isolation import syscall_profiles as sp
from sandbox.monitor import audit_syscalls as S
from sandbox.policy.model import SyscallPolicy

BIND_NR = sp.syscall_number("bind")
INET_LENS = (16, 28)     # sizeof(struct sockaddr_in), sizeof(struct sockaddr_in6)

Dispatch = tuple[sp.Table, Mapping[int, tuple[str, S.Spec]], frozenset[int], frozenset[int]]


@functools.lru_cache(maxsize=64)
def table(profile: str, allow: tuple[str, ...], deny: tuple[str, ...], on_violation: str,
          files: str, network: str) -> Dispatch:
    """The resolved table; audited syscall numbers -> (name, spec); those whose table
    rule is not plain NOTIFY (a deny list entry); the network calls its broker
    performs (issue 10.6)."""
    syscalls = seccomp.audited_syscalls(
        SyscallPolicy(profile=profile, allow=allow, deny=deny, on_violation=on_violation), files)
    notify = seccomp.notify_set_for(files, network, on_violation)
    resolved = seccomp.table_for(syscalls, notify, network)
    specs: dict[int, tuple[str, S.Spec]] = {}
    for name in notify:
        nr = sp.syscall_number(name)
        if nr is not None and name in S.SPECS:
            specs[nr] = (name, S.SPECS[name])
    guarded = frozenset(nr for nr in specs
                        if not (resolved.by_nr.get(nr) is not None
                                and resolved.by_nr[nr].unconditional
                                and resolved.by_nr[nr].otherwise == sp.NOTIFY))
    # bind is a network call under "none" only; elsewhere an audit notifies it as the
    # file a pathname UNIX socket makes (probe 1, F8), never refused as a network bind
    bind = seccomp.BIND_SYSCALLS if network == "none" else frozenset()
    net = frozenset(nr for nr in (sp.syscall_number(n) for n in seccomp.NET_SYSCALLS | bind
                                  if n in notify) if nr is not None)
    return resolved, MappingProxyType(specs), guarded, net


def for_policy(policy: SyscallPolicy, files: str, network: str) -> Dispatch:
    """`table` for a run's syscall policy (its lists made canonical, so equal policies
    share one entry)."""
    return table(policy.profile, tuple(sorted(set(policy.allow))),
                 tuple(sorted(set(policy.deny))), policy.on_violation, files, network)
