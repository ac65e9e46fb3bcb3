"""What the monitor host and its zygote hold warm: the one preload list (what every
run needs, then a Python action's side; an exec'd monitor imports the first part only).

The host imports it before it forks its first zygote (so the zygote, and every
stub, PID 1 and Python action forked from it, share those pages); a zygote
started later by fork+exec, to replace one that died (sandbox.monitor.zygote),
runs the same `warm` itself, so its forks start from the same runtime.
"""
from __future__ import annotations

import importlib
import sys

# Everything the host, a stub and PID 1 run, imported once before the zygote is forked
# (never user action code: that is imported in the sandboxee).
EVERY_RUN = (
    "sandbox.monitor.supervisor", "sandbox.monitor.stubs", "sandbox.monitor.zygote",
    "sandbox.sandboxee.entry", "sandbox.sandboxee.stub",
    # the audit side of the monitor, so a run with [audit] pays no import for it
    "sandbox.audit.store", "sandbox.monitor.broker", "sandbox.monitor.notify_loop",
)
# What only a Python action's own process runs: its worker (with the workflow package)
# and the child's half of the built-in IPC middleware (HMAC, redaction), which the
# worker builds from its `start` frame (worker._install_middleware).
ACTION_SIDE = (
    "sandbox.sandboxee.worker", "sandbox.middleware.auth", "sandbox.middleware.redact",
)
PRELOAD = EVERY_RUN + ACTION_SIDE


def preload(names: tuple[str, ...] = PRELOAD, codec: bool = True) -> None:
    """Import the preload list, before the zygote is forked: a stub, PID 1 and a Python
    action are its forks, and whatever they import later they would read from inside
    the sandbox's view (and a policy without the package's directory could not). With
    `codec`, the protocol's caches are filled too (protocol.resolve_all), so that its
    forks decode without filling any."""
    for name in names:
        if name not in sys.modules:   # (a warm PID 1 runs no import machinery for it)
            importlib.import_module(name)
    if codec:
        from sandbox import protocol
        protocol.resolve_all()


def action_side() -> None:
    """In a Python action's PID 1, once its run is known and before any layer: import
    `ACTION_SIDE` where this process's template has not (an exec'd monitor imports only
    `EVERY_RUN`: its one run is most often a program, for which the action's side was
    ~14 ms of the monitor's start, on the path of every cold `sandbox exec`). PID 1
    still sees the host's files here; a fork server's template has them all already."""
    preload(ACTION_SIDE, codec=False)   # its template filled them (`preload`)


def warm() -> None:
    """`preload`; compile the seccomp programs of the built-in policies, so runs only
    look them up; probe cgroups once, so runs do not each make and remove a probe
    cgroup."""
    preload()
    try:
        from sandbox.monitor import cgroups
        cgroups.probe_cached()
    except Exception:
        pass
    try:
        from sandbox.isolation import seccomp
        from sandbox.policy import load_policy
        for name in ("default", "strict"):
            pol = load_policy(name)
            for audit in ("none", "denied", "all"):
                seccomp.warm(pol.syscalls, audit)
    except Exception:
        pass  # a cold cache is slower, never wrong
    from sandbox.sandboxee import template
    template.warm()
