"""`Launcher.spawn`: run a workflow or a program in a fresh sandbox, get a RunResult.

Per run the launcher makes two socket pairs: the IPC pair (the sandboxee
inherits one end, numbered in ``SANDBOX_IPC_FD``) and the control pair to the
monitor. It starts the monitor, sends it the spec, sends the workflow as the
first IPC frame, and reads until the sandbox is gone. `spawn` is blocking and
thread-safe: run several at once from threads (see `sandbox.parallel`).
"""
from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any, Mapping, Sequence

from sandbox.errors import InputError
from sandbox.ipc.frames import encode
from sandbox.launcher import prepare as P
from sandbox.launcher.assemble import assemble
from sandbox.launcher.handlers import Handler, HandlerSet
from sandbox.launcher.result import SETUP_ERROR, RunResult
from sandbox.launcher.session import Budget, Session, kill_quietly
from sandbox.policy.model import Policy


def _as_target(target: Any) -> tuple[str, Any]:
    from sandbox.workflow import Workflow, load_workflow
    if isinstance(target, Workflow):
        return "workflow", target
    if isinstance(target, Mapping):
        return "workflow", Workflow.from_dict(dict(target))
    if isinstance(target, str):
        if target.endswith(".json"):
            return "workflow", load_workflow(target)
        raise InputError(f"{target!r}: give a program as a list of arguments, "
                         "e.g. ['sh', '-c', 'echo hi'], or a workflow .json file")
    if isinstance(target, Sequence) and target and all(isinstance(a, str) for a in target):
        return "exec", list(target)
    raise InputError("spawn() takes a Workflow, a workflow dict or .json path, "
                     "or a command as a non-empty list of strings")


class Launcher:
    """Spawns sandboxes. Handlers registered here apply to every run."""

    def __init__(self, *, policy: Policy | str | None = None,
                 budget: Budget | None = None, capture_output: bool = False) -> None:
        self.default_policy = policy
        self.budget = budget or Budget()
        self.capture_output = capture_output
        self.handlers = HandlerSet()

    # -- handlers ------------------------------------------------------------
    def on(self, message_type: str, handler: Handler) -> int:
        """Call `handler(message, run_info)` for each message of this type ('*' = all)."""
        return self.handlers.add(message_type, handler)

    def off(self, handler_id: int) -> bool:
        return self.handlers.remove(handler_id)

    # -- spawning ------------------------------------------------------------
    def spawn(self, target: Any, *, policy: Policy | str | None = None,
              store: dict[str, Any] | None = None, timeout: float | None = None,
              workdir: str | None = None, output_dir: str | None = None,
              env: Mapping[str, str] | None = None,
              handlers: Mapping[str, Handler] | None = None,
              capture_output: bool | None = None, item: Any = None,
              index: int | None = None, code_paths: Sequence[str] = ()) -> RunResult:
        """Run `target` sandboxed and return its RunResult.

        `code_paths` are directories the child may read and import action
        modules from (put on its sys.path). `store`, if given, is updated in place with only the keys the child
        changed or deleted (GoStage's sync-back, with JSON types kept).
        Raises InputError for a bad target or policy; every failure of the
        run itself is reported in the RunResult instead.
        """
        mode, body = _as_target(target)
        wf_policy = getattr(body, "policy", None) if mode == "workflow" else None
        pol = P.tighten_wall(P.load(policy or wf_policy, self.default_policy), timeout)
        run_id = uuid.uuid4().hex
        ipc_parent, ipc_child = socket.socketpair()
        ctl_parent, ctl_child = socket.socketpair()
        try:
            prep = P.prepare(run_id, pol, mode=mode, workdir=workdir, output_dir=output_dir,
                             env=env, ipc_fd=ipc_child.fileno(), code_paths=code_paths)
        except BaseException:
            for s in (ipc_parent, ipc_child, ctl_parent, ctl_child):
                s.close()
            raise
        capture = self.capture_output if capture_output is None else capture_output
        initial = copy.deepcopy(store) if store is not None else {}
        if mode == "workflow":
            initial = {**copy.deepcopy(body.store), **initial}
        result = RunResult(run_id=run_id, policy=prep.policy.name, output_dir=prep.paths.output)
        t0 = time.monotonic()
        try:
            proc = self._start_monitor(prep, ipc_child, ctl_child, capture)
        except OSError as exc:
            result.status, result.reason = SETUP_ERROR, f"cannot start the monitor: {exc}"
            return result
        finally:
            ipc_child.close()
            ctl_child.close()
        run_handlers = HandlerSet()
        for type_, fn in (handlers or {}).items():
            run_handlers.add(type_, fn)
        session = Session(run_id=run_id, proc=proc, ipc=ipc_parent, ctl=ctl_parent,
                          store=copy.deepcopy(initial), budget=self.budget,
                          handler_sets=[self.handlers, run_handlers],
                          wall=prep.policy.limits.wall)
        try:
            session.send_ctl("spec", self._spec(prep, mode, body, ipc_child))
            if mode == "workflow":
                self._send_start(ipc_parent, prep, body, initial, item, index, code_paths)
            state = session.run()
        finally:
            kill_quietly(proc) if proc.poll() is None and session.state.monitor_report is None \
                else None
            proc.wait()
            ipc_parent.close()
            ctl_parent.close()
            shutil.rmtree(prep.paths.rundir, ignore_errors=True)
        result.wall_time = time.monotonic() - t0
        assemble(result, state, prep.policy, mode)
        self._merge_store(result, state, initial, store)
        return result

    # -- pieces ----------------------------------------------------------------
    def _start_monitor(self, prep: P.Prepared, ipc_child: socket.socket,
                       ctl_child: socket.socket, capture: bool) -> subprocess.Popen:
        env = {"SANDBOX_MONITOR_FD": str(ctl_child.fileno()),
               "SANDBOX_LAUNCHER_PID": str(os.getpid())}
        pipe = subprocess.PIPE if capture else None
        return subprocess.Popen(P.monitor_command(), env=env, stdin=subprocess.DEVNULL,
                                stdout=pipe, stderr=pipe,
                                pass_fds=(ipc_child.fileno(), ctl_child.fileno()))

    def _spec(self, prep: P.Prepared, mode: str, body: Any,
              ipc_child: socket.socket) -> dict[str, Any]:
        return {"run_id": prep.run_id, "mode": mode,
                "argv": body if mode == "exec" else None,
                "env": prep.env, "policy": prep.policy.to_dict(),
                "fs_plan": prep.plan.to_dict(), "paths": vars(prep.paths),
                "ipc_fd": int(prep.env["SANDBOX_IPC_FD"])}

    def _send_start(self, ipc: socket.socket, prep: P.Prepared, wf: Any,
                    initial: dict[str, Any], item: Any, index: int | None,
                    code_paths: Sequence[str]) -> None:
        payload = {"sys_path": [os.path.abspath(p) for p in code_paths],
                   "workflow": wf.to_dict(), "store": initial, "run_id": prep.run_id,
                   "output_dir": prep.paths.output, "imports": list(getattr(wf, "imports", ())),
                   "item": item, "index": index}
        ipc.sendall(encode("start", payload, max_frame=self.budget.max_frame))

    @staticmethod
    def _merge_store(result: RunResult, state: Any, initial: dict[str, Any],
                     caller_store: dict[str, Any] | None) -> None:
        """Only the keys the child changed or deleted move; the final_store frame wins."""
        changed, deleted = set(state.changed), set(state.deleted)
        values = dict(state.store)
        if state.final is not None:
            final = state.final.get("store", {})
            changed = set(state.final.get("changed", [])) | changed
            deleted = set(state.final.get("deleted", [])) | deleted
            values.update({k: final[k] for k in changed if k in final})
        merged = dict(initial)
        for key in sorted(changed):
            if key in values:
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
