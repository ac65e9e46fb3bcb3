"""Nested spawns: the launcher runs a sub-workflow on behalf of a sandboxed action.

The sandboxed child cannot create sandboxes (seccomp forbids unshare and
mount), so ``ctx.spawn(workflow, policy=None)`` in an action sends
``spawn_request {request_id, workflow, policy}`` and blocks until
``spawn_result {request_id, result}`` comes back. The launcher handles the
request here, in a thread (the session loop keeps reading the parent's
messages meanwhile), by calling the same `Launcher.spawn`:

- depth: counted by the launcher (`Lineage`), never read from the child;
  a request that would exceed ``Launcher.max_depth`` (default 5; the
  caller's run is depth 0) is refused without spawning;
- policy: ``None`` means the workflow's own ``policy`` field or else the
  parent's policy; a name (a built-in or registered policy: no ``/``, a
  file path from a child is refused) or a policy dict (untrusted data,
  checked like a policy file by `parse_policy_data`; its ``extends`` may
  name built-in or registered policies only). The launcher then derives
  the child's limits, network, syscalls, audit and denies from the parent's
  (never looser) and refuses the run unless the child's *resolved* policy
  and plan stay inside the parent's resolved policy (`Lineage.ceiling`,
  checked in `prepare`; see `sandbox.policy.confine`). The child's own fresh
  WORKDIR and OUTPUT are the only places it may grant that the parent did
  not. Its glob expansion is bounded and stops when the parent run ends;
- at most `MAX_IN_FLIGHT` requests of one run are served at a time, and
  `MAX_PER_RUN` in all (a child looping on ctx.spawn is cut off);
- every nested run counts against the launcher's ``max_concurrent``: it
  borrows the slot of the run that asked for it (one child at a time), and
  its siblings wait for a free slot (`sandbox.launcher.slots`: never a
  deadlock, at most ``max_concurrent`` sandboxes running at once), which the
  root's `Lineage.gate` may refuse (the service counts them against the
  token's concurrency);
- messages of a nested run go to the launcher's handlers and hooks and to
  every ancestor run's own handlers, with ``RunInfo.depth`` set: that is how
  a grandchild's ``store_put`` is observable at the top. Stores do not merge
  implicitly: the requesting action gets the sub-run's final store in the
  result and puts what it wants into its own store;
- when the parent run ends, nested runs still going are cancelled.

A refused request gets a result with ``status = "error"`` and the reason;
the action's ``ctx.spawn`` returns it (it does not raise).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sandbox.errors import SandboxError
from sandbox.ipc.frames import encode
from sandbox.launcher.records import clip_text
from sandbox.policy.confine import Ceiling
from sandbox.policy.model import Policy

DEFAULT_MAX_DEPTH = 5
MAX_IN_FLIGHT = 8
MAX_PER_RUN = 256
RESULT_KEYS = ("run_id", "status", "reason", "exit_code", "store", "changed_keys",
               "deleted_keys", "bailed", "bail_reason", "error", "messages", "logs")


@dataclass(frozen=True)
class Lineage:
    """Where a run sits in a tree of nested spawns (kept by the launcher)."""
    depth: int = 0
    parent_run_id: str | None = None
    handler_sets: tuple[Any, ...] = ()    # run-scoped HandlerSets of the ancestors
    ceiling: Ceiling | None = None        # the parent run's resolved policy
    lender: Any = None    # the requesting run's slot Lease, which this run may borrow
    slot: Any = None      # the Lease this run holds (set by the launcher once it has one)
    gate: Any = None      # who lets its nested runs take a free slot (launcher.slots.Gate)
    scans: Any = None     # source-scan workers it shares with its siblings (WorkerAllowance)


def ceilings(lineage: Lineage, hooked_from: Policy | None) -> tuple[Ceiling, ...]:
    """What a run's resolved policy and plan are checked against in `prepare`:
    its parent's resolved policy (nested runs) and the policy a before_spawn
    hook was given (a hook may only tighten)."""
    out = [lineage.ceiling] if lineage.ceiling is not None else []
    if hooked_from is not None:
        out.append(Ceiling(hooked_from, what="the policy before the before_spawn hooks"))
    return tuple(out)


def requested_policy(req: Any, parent: Policy) -> Policy:
    """The Policy a child asked for (raises SandboxError when unacceptable)."""
    from sandbox.policy import load_policy
    from sandbox.policy.loader import parse_policy_data
    from sandbox.policy.search import is_name
    if req is None:
        return parent
    if isinstance(req, str):
        if not is_name(req):
            raise SandboxError(f"policy {req!r}: a nested spawn may name a policy, not a file")
        return load_policy(req)
    if isinstance(req, dict):
        data = {k: v for k, v in req.items() if k != "source"}   # informational only
        limits = data.get("limits")
        if isinstance(limits, dict):   # Policy.to_dict() spells "unlimited" as None
            data["limits"] = {k: v for k, v in limits.items() if v is not None}
        from sandbox.policy.planner import check_glob_count
        policy = parse_policy_data(data, file="<nested spawn request>")
        check_glob_count(policy)   # before anything compiles its patterns
        return policy
    raise SandboxError(f"policy must be null, a name or a dict, not {type(req).__name__}")


def refused(reason: str, depth: int) -> dict[str, Any]:
    """A refusal's result. The reason may quote what the child sent (a policy name,
    a key): clipped (records.clip_text), as every record the launcher keeps of a
    request (`NestedService.runs`); 256 requests of 600 KB names were ~150 MB kept."""
    return {"run_id": None, "status": "error", "reason": clip_text(reason), "depth": depth,
            "store": {}, "changed_keys": [], "deleted_keys": [], "bailed": False,
            "bail_reason": None, "error": None, "exit_code": None, "messages": {}, "logs": []}


def summarize(result: Any, depth: int, max_frame: int) -> dict[str, Any]:
    out = {k: getattr(result, k) for k in RESULT_KEYS}
    out["depth"] = depth
    why = ""
    for drop in ((), ("logs",), ("logs", "error", "messages")):
        trimmed = {k: v for k, v in out.items() if k not in drop}
        try:
            encode("spawn_result", {"request_id": "x" * 64, "result": trimmed},
                   max_frame=max_frame - 512)
            return trimmed
        except Exception as exc:
            why = str(exc)
    return refused(f"the nested run's result ({result.status}) cannot be sent back "
                   f"(too large or too deep for one frame): {why}",
                   depth) | {"run_id": result.run_id}


class NestedService:
    """Serves the spawn requests of one run. `send(type, payload)` writes to its child."""

    def __init__(self, launcher: Any, *, run_id: str, lineage: Lineage, policy: Policy,
                 send: Callable[[str, Any], None], code_paths: Sequence[str] = (),
                 middleware: Sequence[Any] = (), max_frame: int = 1 << 20,
                 resolved: Policy | None = None) -> None:
        """`policy`: the parent's raw policy (what a request for none gets, resolved
        anew for the child's own directories); `resolved`: the parent's resolved
        policy, the ceiling of every nested run (None only in unit tests that
        never spawn: then the raw policy is the ceiling)."""
        self.launcher, self.run_id, self.lineage, self.policy = launcher, run_id, lineage, policy
        self.ceiling = Ceiling(resolved if resolved is not None else policy, own_roots=True,
                               what="the parent run's policy")
        self.send, self.code_paths, self.middleware = send, list(code_paths), list(middleware)
        self.max_frame = max_frame
        self.cancel = threading.Event()
        self.threads: list[threading.Thread] = []
        self.runs: list[dict[str, Any]] = []      # summaries, for the parent's RunResult
        self.requests = 0
        self._lock = threading.Lock()
        self._scans: Any = None

    @property
    def scans(self) -> Any:
        """The source-scan workers this run's requests share (WorkerAllowance), made at
        the first request: every run has a NestedService, and the workflow package is
        no import of a plain `sandbox exec` (tests/test_daemon_preload.py)."""
        with self._lock:
            if self._scans is None:
                from sandbox.workflow.static_check import WorkerAllowance
                self._scans = WorkerAllowance()
            return self._scans

    def submit(self, payload: Any) -> None:
        """Handle one ``spawn_request`` (called from the session loop: never blocks)."""
        rid = payload.get("request_id") if isinstance(payload, dict) else None
        if not isinstance(rid, str) or not rid or len(rid) > 128:
            return  # nobody to answer; the message itself is still counted and dispatched
        depth = self.lineage.depth + 1
        with self._lock:
            live = [t for t in self.threads if t.is_alive()]
            busy = len(live) >= MAX_IN_FLIGHT
            self.threads = live
            self.requests += 1
            spent = self.requests > MAX_PER_RUN
        if busy or spent:
            why = (f"more than {MAX_PER_RUN} nested spawns for one run" if spent
                   else f"more than {MAX_IN_FLIGHT} nested spawns in flight")
            self._reply(rid, refused(why, depth))
            return
        t = threading.Thread(target=self._serve, args=(rid, payload, depth), daemon=True,
                             name=f"nested-{self.run_id[:8]}-{rid[:8]}")
        with self._lock:
            self.threads.append(t)
        t.start()

    def _serve(self, rid: str, payload: dict[str, Any], depth: int) -> None:
        below: list[dict[str, Any]] = []
        try:
            result, below = self._spawn(payload, depth)
        except Exception as exc:  # a bug here must still answer the waiting child
            result = refused(f"nested spawn failed: {type(exc).__name__}: {exc}", depth)
        entry = {"request_id": rid, "run_id": result.get("run_id"), "depth": depth,
                 "status": result["status"], "reason": clip_text(result.get("reason", ""))}
        if below:   # the child's own spawns: whoever keeps its records finds the whole tree
            entry["nested"] = below
        with self._lock:
            self.runs.append(entry)
        self._reply(rid, result)

    def _spawn(self, payload: dict[str, Any], depth: int
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(what the requesting action gets, the nested runs of the child's own)."""
        max_depth = getattr(self.launcher, "max_depth", DEFAULT_MAX_DEPTH)
        if depth > max_depth:
            return refused(f"nesting depth limit reached: depth {depth} > max_depth {max_depth}",
                           depth), []
        workflow = payload.get("workflow")
        if not isinstance(workflow, dict):
            return refused("spawn_request: 'workflow' must be a workflow object", depth), []
        try:
            policy = requested_policy(payload.get("policy") or workflow.get("policy"),
                                      self.policy)
        except Exception as exc:
            return refused(f"policy refused: {exc}", depth), []
        if self.cancel.is_set():
            return refused("cancelled", depth), []
        # Narrower-or-equal is decided on the resolved policy and plan, in `prepare`.
        lineage = Lineage(depth=depth, parent_run_id=self.run_id,
                          handler_sets=self.lineage.handler_sets + self._own_handlers,
                          ceiling=self.ceiling,
                          lender=self.lineage.slot, gate=self.lineage.gate,
                          scans=self.scans)
        try:
            result = self.launcher.spawn(workflow, policy=policy, code_paths=self.code_paths,
                                         middleware=self.middleware, cancel=self.cancel,
                                         lineage=lineage)
        except SandboxError as exc:     # a bad workflow: InputError, WorkflowError, ...
            return refused(f"{type(exc).__name__}: {exc}", depth), []
        return summarize(result, depth, self.max_frame), list(result.nested or ())

    _own_handlers: tuple[Any, ...] = ()

    def set_own_handlers(self, handler_sets: Sequence[Any]) -> None:
        """The parent run's own run-scoped handlers, inherited by its nested runs."""
        self._own_handlers = tuple(handler_sets)

    def _reply(self, rid: str, result: dict[str, Any]) -> None:
        """Answer the waiting action, always: a result that cannot be sent (an outbound
        middleware raised, it would not encode) is answered by a refusal saying why;
        a dropped reply left the action waiting until the parent's wall limit."""
        try:
            self.send("spawn_result", {"request_id": rid, "result": result})
            return
        except OSError:
            return  # the child is gone (or its socket closed): nobody waits any more
        except Exception as exc:
            why = f"the nested run's result could not be sent: {type(exc).__name__}: {exc}"
        try:
            self.send("spawn_result", {"request_id": rid, "result": {
                **refused(why, result.get("depth", self.lineage.depth + 1)),
                "run_id": result.get("run_id")}})
        except Exception:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Cancel nested runs still going and wait (bounded) for their threads."""
        self.cancel.set()
        with self._lock:
            threads = list(self.threads)
        for t in threads:
            t.join(timeout)


class ChildSpawner:
    """The child's half: ``ctx.spawn`` sends ``spawn_request`` and waits for its result.

    Several threads of one action may spawn at once: one of the waiting
    threads at a time reads the channel and hands each ``spawn_result`` to
    the thread that asked for it. The launcher sends nothing else to the
    child after `start`, so any other frame while waiting, or the end of the
    stream, raises `ProtocolError` in the waiting action.
    """

    def __init__(self, chan: Any) -> None:
        self.chan = chan
        self.cond = threading.Condition()
        self.results: dict[str, Any] = {}
        self.reading = False

    def spawn(self, workflow: dict[str, Any], policy: Any = None) -> dict[str, Any]:
        import uuid
        rid = uuid.uuid4().hex
        self.chan.send("spawn_request", {"request_id": rid, "workflow": workflow,
                                         "policy": policy})
        return self._wait(rid)

    def _wait(self, rid: str) -> dict[str, Any]:
        from sandbox.errors import ProtocolError
        with self.cond:
            while rid not in self.results and self.reading:
                self.cond.wait()
            if rid in self.results:
                return self.results.pop(rid)
            self.reading = True
        try:
            while True:
                msg = self.chan.recv()
                if msg is None:
                    raise ProtocolError("the launcher closed the channel during a nested spawn")
                if msg.type != "spawn_result" or not isinstance(msg.payload, dict):
                    raise ProtocolError(f"unexpected {msg.type!r} frame while waiting for "
                                        "a spawn_result")
                with self.cond:
                    self.results[str(msg.payload.get("request_id"))] = msg.payload.get("result")
                    self.cond.notify_all()
                    if rid in self.results:
                        return self.results.pop(rid)
        finally:
            with self.cond:
                self.reading = False
                self.cond.notify_all()
