"""What the monitor host and its zygote hold warm: the one preload list.

The host imports it before it forks its first zygote (so the zygote, and every
stub, PID 1 and Python action forked from it, share those pages); a zygote
started later by fork+exec, to replace one that died (sandbox.monitor.zygote),
runs the same `warm` itself, so its forks start from the same runtime.
"""
from __future__ import annotations

import importlib

# Everything the host, a stub and PID 1 run, imported once before the zygote is forked
# (never user action code: that is imported in the sandboxee).
PRELOAD = (
    "sandbox.monitor.supervisor", "sandbox.monitor.stubs", "sandbox.monitor.zygote",
    "sandbox.sandboxee.entry", "sandbox.sandboxee.stub", "sandbox.sandboxee.worker",
    # the audit side of the monitor, so a run with [audit] pays no import for it
    "sandbox.audit.store", "sandbox.monitor.broker", "sandbox.monitor.notify_loop",
    # the child's half of the built-in IPC middleware (HMAC, redaction), which a Python
    # action's worker builds from its `start` frame (worker._install_middleware)
    "sandbox.middleware.auth", "sandbox.middleware.redact",
)


def preload() -> None:
    """Import the preload list, before the zygote is forked: a stub, PID 1 and a Python
    action are its forks, and whatever they import later they would read from inside
    the sandbox's view (and a policy without the package's directory could not)."""
    for name in PRELOAD:
        importlib.import_module(name)


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
