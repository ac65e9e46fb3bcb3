"""Retention: runs that ended longer ago than the retention go, with everything
kept for them (their directory, their audit file, their events, their row).

Only ended runs are touched (queued and running ones never), and only what
the service made for them: paths are built from the run's id, which the
service generated, and removed without following links.
"""
from __future__ import annotations

import os
import shutil
import time

from sandbox.service.config import ServiceConfig
from sandbox.service.periodic import Periodic
from sandbox.service.store import Store

SETTING = "retain_seconds"


def stored_retention(store: Store) -> float | None:
    value = store.setting(SETTING)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _remove_audit(audit_dir: str, launcher_run_id: object) -> None:
    from sandbox.audit import store as audit
    if not isinstance(launcher_run_id, str):
        return
    try:
        path = audit.run_file(audit_dir, launcher_run_id)
    except ValueError:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def audited_runs(result: object) -> list[str]:
    """The launcher run ids of a RunResult's run and of every nested run under it
    (each has its own audit file: retention removed only the top one's, and 20 of
    21 files stayed, probe2 finding 8)."""
    out: list[str] = []
    todo: list[object] = [result]
    while todo:
        node = todo.pop()
        if not isinstance(node, dict):
            continue
        if isinstance(node.get("run_id"), str):
            out.append(node["run_id"])
        below = node.get("nested")
        if isinstance(below, list):
            todo.extend(below)
    return out


def remove_audit(audit_dir: str, result: object) -> None:
    """Remove the audit files of a run and of its nested runs."""
    for launcher_run_id in audited_runs(result):
        _remove_audit(audit_dir, launcher_run_id)


def apply(store: Store, config: ServiceConfig, older_than: float,
          now: float | None = None) -> list[str]:
    """Delete every run that ended before now - older_than; their ids."""
    cutoff = (time.time() if now is None else now) - older_than
    gone = []
    for run_id in store.finished_before(cutoff):
        row = store.run(run_id)
        if row is None or row.finished_at is None or row.finished_at >= cutoff:
            continue
        if not run_id.startswith("run_") or "/" in run_id:
            continue
        shutil.rmtree(config.run_dir(run_id), ignore_errors=True)
        remove_audit(config.audit_dir, row.result)
        store.delete_run(run_id)
        gone.append(run_id)
    return gone


class Reaper:
    """Applies the retention in the background while the server runs."""

    def __init__(self, store: Store, config: ServiceConfig) -> None:
        self.store, self.config = store, config
        self._loop: Periodic | None = None

    def start(self) -> None:
        retain = self.config.retain
        if retain is None:
            return
        self._loop = Periodic("sandbox-service-retention", min(60.0, max(0.2, retain / 4)),
                              lambda: apply(self.store, self.config, float(retain)))
        self._loop.start()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()
