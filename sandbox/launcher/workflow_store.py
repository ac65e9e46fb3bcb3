"""A workflow run's store on its way in and out: the `start` frame the child gets, checked
before anything runs, and the keys it changed merged back into the caller's store.

WHY here and not in the launcher: both ends read what the child may shape (its
store and params going in, its `final_store` frame coming back), so each is one
function with its own bounds and tests (tests/test_ipc_hostile.py fuzzes the merge).
"""
from __future__ import annotations

import copy
import os
import socket
from typing import TYPE_CHECKING, Sequence

from sandbox.errors import InputError, ProtocolError
from sandbox.ipc.frames import encode
from sandbox.launcher.result import RunResult

if TYPE_CHECKING:
    from sandbox.launcher.session import SessionState
    from sandbox.workflow.model import Workflow

# what `check` leaves of the frame budget for what `send` adds (run id, output path, ...)
_MARGIN = 4096


def payload(wf: "Workflow", initial: dict[str, object], run_id: str, output_dir: str | None,
            item: object, index: int | None, code_paths: Sequence[str],
            middleware: Sequence[object]) -> dict[str, object]:
    """The `start` frame's payload (docs/ipc-protocol.md)."""
    return {"sys_path": [os.path.abspath(p) for p in code_paths],
            "workflow": wf.to_dict(), "store": initial, "run_id": run_id,
            "output_dir": output_dir, "imports": list(getattr(wf, "imports", ())),
            "item": item, "index": index, "middleware": list(middleware)}


def check(wf: "Workflow", store: dict[str, object] | None, item: object, index: int | None,
          code_paths: Sequence[str], max_frame: int) -> None:
    """The `start` frame must be one the child accepts (size, depth), decided before
    anything runs: a store value 62 levels deep (a `--store`, or one a child sent
    back) started a sandbox that failed with a ProtocolError of its own."""
    start = payload(wf, {**wf.store, **(store or {})}, "", "", item, index, code_paths, [])
    try:
        encode("start", start, max_frame=max_frame - _MARGIN)
    except ProtocolError as exc:
        raise InputError(f"workflow {wf.name!r}: its store, params or item cannot be "
                         f"sent to the sandbox: {exc}") from None


def send(ipc: socket.socket, wf: "Workflow", initial: dict[str, object], run_id: str,
         output_dir: str, item: object, index: int | None, code_paths: Sequence[str],
         middleware: Sequence[object], max_frame: int) -> None:
    ipc.sendall(encode("start", payload(wf, initial, run_id, output_dir, item, index,
                                        code_paths, middleware), max_frame=max_frame))


def _names(keys: object) -> set[str]:
    """The store keys a final_store frame lists (a list of strings; anything else: none)."""
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def merge(result: RunResult, state: "SessionState", initial: dict[str, object],
          caller_store: dict[str, object] | None) -> None:
    """Only the keys the child changed or deleted move; the final_store frame wins.
    The frame is the child's: a key it calls changed without giving its value (or a
    key that is not a string) changes nothing. Before, `changed: ["ghost"]` with an
    empty store raised KeyError here, and the run's whole result was lost."""
    changed, deleted = set(state.changed), set(state.deleted)
    values = dict(state.store)
    if state.final is not None:
        final = state.final.get("store", {})
        final = final if isinstance(final, dict) else {}
        changed = _names(state.final.get("changed")) | changed
        deleted = _names(state.final.get("deleted")) | deleted
        values.update({k: final[k] for k in changed if k in final})
    changed &= values.keys()
    merged = dict(initial)
    for key in sorted(changed):
        merged[key] = values[key]
    for key in deleted - changed:
        merged.pop(key, None)
    result.store = merged
    result.changed_keys = sorted(changed)
    result.deleted_keys = sorted(deleted - changed)
    if caller_store is not None:
        for key in result.changed_keys:
            caller_store[key] = copy.deepcopy(merged[key])
        for key in result.deleted_keys:
            caller_store.pop(key, None)
