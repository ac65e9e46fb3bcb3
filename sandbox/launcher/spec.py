"""A run's spec for its monitor, and the two paths in it that are not the run's own:
the sandbox's init (the installation's) and the audit store (the caller's state).

The audit store directory is made (0700) before the plan, so that the planner can
hide it from the sandbox (`prepare.hide`); the init is built on first use by an
install that predates it. Apart from prepare.py because both are read through
modules that import prepare's state directory (sandbox._native, sandbox.audit.store).
"""
from __future__ import annotations

import os

from sandbox.launcher.prepare import Prepared
from sandbox.protocol import RunPathsWire, Spec


def spec(prep: Prepared, mode: str, body: object, audit_db: str | None,
         audit_max_bytes: int | None) -> Spec:
    """The run's spec for its monitor (the launcher adds its clock, policy sources,
    caller state and stdio once the monitor is started)."""
    argv = list(body) if mode == "exec" and isinstance(body, list) else None
    return Spec(
        run_id=prep.run_id, mode=mode, argv=argv,
        env=dict(prep.env), policy=prep.policy.to_dict(), fs_plan=prep.plan.to_dict(),
        paths=RunPathsWire(**vars(prep.paths)),
        ipc_fd=int(prep.env["SANDBOX_IPC_FD"]),
        audit_db=audit_db or audit_db_default(),
        audit_max_bytes=audit_max_bytes, init_path=init_path())


def init_path() -> str:
    """The sandbox's init binary (built now if this install predates it); when that fails,
    the installed path, and the sandboxee reports the missing binary as a setup error."""
    from sandbox import _native
    from sandbox.errors import SetupError
    try:
        return _native.init_path()
    except SetupError:
        return _native.INIT_PATH


def audit_db_default() -> str:
    from sandbox.audit.store import default_path
    return default_path()


def audit_store(configured: str | None) -> tuple[str, ...]:
    """The audit store directory, created (0700) so the planner can mask it; none
    when it would need a new top-level directory (a HOME that does not exist:
    then there is nothing to hide, and the monitor counts its records as lost)."""
    from sandbox.audit.store import NoHome, ensure_dir
    try:
        return (ensure_dir(os.path.abspath(configured or audit_db_default())),)
    except NoHome:
        return ()
