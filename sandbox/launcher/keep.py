"""What a run leaves on the host once it ended, and what of the launcher's own state
its sandbox must not see.

- **The run history is hidden** from a sandbox whose rules would show it (e.g.
  `${WORKDIR} = $HOME`): a program must not read earlier runs' argv, stores and
  logs, nor forge records (`hide_history`, before the plan goes out).
- **A copy-on-write work directory's changes** go into the output once the run has
  started (`export_workdir`, on every exit path of a run).
- **An output directory the launcher made and nothing was written to** goes, and a
  top-level run gets its row in the run history (`leftovers`, after the result is
  assembled). History is housekeeping: its failure never fails a run.

Split from launcher.py, which calls these in that order.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
from typing import Sequence

from sandbox.errors import SandboxError
from sandbox.history import History, remove_if_empty, runs_dir
from sandbox.launcher import tidy, workdir_cow
from sandbox.launcher.prepare import Prepared
from sandbox.launcher.result import RunResult
from sandbox.policy.plan import FsPlan


def hide_history(plan: FsPlan, history: History | None) -> FsPlan:
    """`plan` with the run-history directory masked when one of its rules would show it."""
    if history is None:
        return plan
    hidden = os.path.dirname(os.path.abspath(history.path))
    if not os.path.isdir(hidden) or hidden in plan.masks:
        return plan
    if not any(hidden == r.path or hidden.startswith(r.path.rstrip("/") + "/")
               for r in plan.rules):
        return plan
    return dataclasses.replace(plan, masks=(*plan.masks, hidden))


def export_workdir(prep: Prepared, result: RunResult, started: Sequence[object]) -> None:
    """A copy-on-write work directory's changes into the output (workdir_cow), once
    a run started; its layer goes either way (a started run's mountpoint with its
    rundir, by tidy's thread: it may still be a mountpoint of the sandbox's mount
    namespace, whose rmdir waits). What stayed empty in an output the launcher
    made is left to `leftovers`, which discards that whole output when nothing else
    is in it."""
    if not workdir_cow.wanted(prep.policy):
        return
    if not started:
        workdir_cow.cleanup(prep.paths)
        return
    try:
        result.workdir_changes, _deleted = workdir_cow.export(
            prep.paths, remove_empty=not prep.own_output)
    except OSError as exc:
        result.workdir_changes = None
        result.hints.append(f"the work directory's changes could not be exported: {exc}")


def leftovers(result: RunResult, prep: Prepared, mode: str, body: object,
              history: History | None) -> None:
    """An empty output directory the launcher made goes (output_dir = None); the run is
    recorded in `history` (None: not recorded, as a nested run is not)."""
    if prep.own_output:
        cow = workdir_cow.wanted(prep.policy)
        if tidy.discard_empty_run(prep.paths.output, runs_dir(),
                                  workdir_cow.EMPTIES if cow else ()):
            result.output_dir = None
        else:
            if cow:
                try:
                    workdir_cow.export(prep.paths)   # what stayed empty goes in place
                except OSError:
                    pass
            if remove_if_empty(prep.paths.output):
                result.output_dir = None
    if history is None:
        return
    command = json.dumps(body) if mode == "exec" else str(getattr(body, "name", "workflow"))
    try:
        history.record(result, kind=mode, command=command, own_output=prep.own_output)
    except (OSError, sqlite3.Error, SandboxError):
        pass    # history is housekeeping: it never fails a run
