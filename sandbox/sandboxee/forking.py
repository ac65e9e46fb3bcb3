"""fork(2) for the sandboxee's lineage: the zygote, the stub and PID 1.

They fork with `libc.fork_without_hooks` (no at-fork hooks: each copies pages a
Python action's PID 2 would inherit, docs/benchmarks-journal.md), which is sound only
in a process with one thread: no lock another thread holds at the fork, no
thread the child would believe alive. This checks it, with `threading` (whose
count is right in a fork of a process that had threads, too: its own at-fork
hook prunes them). A module of its own so that libc, which the broker's child
reaches, imports no locking module (tests/test_broker_fork_safety.py).

What the hooks would have done that still matters is the caller's: `random`'s
state is the parent's (sandbox.sandboxee.worker reseeds it).
"""
from __future__ import annotations

import threading

from sandbox.isolation import libc


def fork_single_threaded() -> int:
    """fork(2) without the at-fork hooks; RuntimeError where another thread runs."""
    if threading.active_count() != 1:
        raise RuntimeError("fork_single_threaded in a process with threads")
    return libc.fork_without_hooks()
