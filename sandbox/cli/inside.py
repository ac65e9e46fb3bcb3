"""Is this CLI running inside a sandbox? Then it cannot make one (found by a new-user
probe: `sandbox exec -- sandbox exec -- echo` first said "unknown policy 'default'"
with a hint to --read a directory, and following it ended in a setup_error).

A sandbox makes no namespaces or mounts of its own (seccomp refuses them), so a
sandbox inside one is asked of the outer launcher. Said here, in one line, before
any policy is looked up. The evidence is passive, never a probe (an unshare tried
here would be a refused syscall, or a kill-mode violation, of the outer run):
SANDBOX_RUN_ID, which the launcher gives every sandboxed program, and a seccomp
filter on this process (a caller who merely set the variable is not refused).
"""
from __future__ import annotations

import os

MAKERS = ("exec", "run")     # the commands that make a sandbox on this machine


def enclosing_run() -> str | None:
    """The id of the sandbox run this process is in, or None."""
    run_id = os.environ.get("SANDBOX_RUN_ID")
    if not run_id:
        return None
    try:
        with open("/proc/self/status") as f:
            filtered = any(line.split() == ["Seccomp:", "2"] for line in f)
    except OSError:
        filtered = True     # no /proc: a sandbox's view without it, not a host
    return run_id if filtered else None


def refusal(command: str) -> str | None:
    """The one-line error for `command` run inside a sandbox, or None."""
    run_id = enclosing_run() if command in MAKERS else None
    if run_id is None:
        return None
    return (f"sandbox {command} runs inside sandbox run {run_id[:12]}, which cannot make "
            "sandboxes (no namespaces or mounts of its own): a sandbox inside a sandbox is "
            "asked of the outer launcher (ctx.spawn in a workflow action, docs/workflows.md)")
