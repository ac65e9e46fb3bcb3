"""The in-process Runner: stages in order, actions in order, middleware around each.

The Runner knows nothing about processes or IPC. The launcher runs this same
Runner inside the sandboxed child and passes callables (`on_change`,
`log_sink`, `send`) that turn store changes, log records and messages into
IPC frames; tests pass nothing and read the `Outcome`.

Middleware wraps execution at three levels (workflow, stage, action). A
middleware is ``mw(call, next)``; it runs code before and after ``next()``,
may skip the wrapped work by not calling ``next()``, and sees (and may catch
or translate) exceptions raised inside. The first registered middleware of a
level is the outermost. Levels nest: every workflow middleware wraps every
stage middleware, which wraps every action middleware, which wraps the action.
"""
from __future__ import annotations

import sys

import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sandbox.workflow.context import ActionContext, Bail, LogSink, OnChange, Send, SpawnFn, Store
from sandbox.workflow.model import ActionRef, Stage, Workflow
from sandbox.workflow.registry import ActionFn, Registry, default_registry, import_modules

LEVELS = ("workflow", "stage", "action")


@dataclass
class Invocation:
    """What a middleware is wrapping. `stage`/`action` are None above their level."""
    level: str
    workflow: Workflow
    stage: Stage | None
    action: ActionRef | None
    context: ActionContext
    stage_index: int | None = None
    action_index: int | None = None

    @property
    def store(self) -> Store:
        return self.context.store


Middleware = Callable[[Invocation, Callable[[], None]], None]


@dataclass
class Outcome:
    """How a run ended.

    `status` is "ok" (including a bail) or "error". `error` is None or
    ``{type, message, traceback, stage, action, stage_index, action_index}``
    where stage/action are None if the error came from outside them (e.g. a
    workflow middleware). `store` is the final store, even after an error;
    `changed`/`deleted` are the keys whose last operation was put/delete.
    `logs` holds every log record as ``{level, message, extra}``; `messages`
    holds ``(type, payload)`` sent by actions when no `send` sink was given.
    """
    status: str
    run_id: str
    bailed: bool = False
    bail_reason: str | None = None
    error: dict[str, Any] | None = None
    store: dict[str, Any] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    logs: list[dict[str, Any]] = field(default_factory=list)
    messages: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (sets become sorted lists)."""
        return {"status": self.status, "run_id": self.run_id, "bailed": self.bailed,
                "bail_reason": self.bail_reason, "error": self.error, "store": self.store,
                "changed": sorted(self.changed), "deleted": sorted(self.deleted),
                "logs": self.logs, "messages": [list(m) for m in self.messages]}


class Runner:
    """Runs workflows in this process, resolving action names via `registry`."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or default_registry
        self._middleware: dict[str, list[Middleware]] = {level: [] for level in LEVELS}

    def use_workflow(self, mw: Middleware) -> Middleware:
        """Add a middleware around the whole workflow. Returns `mw` (decorator-friendly)."""
        self._middleware["workflow"].append(mw)
        return mw

    def use_stage(self, mw: Middleware) -> Middleware:
        """Add a middleware around each stage."""
        self._middleware["stage"].append(mw)
        return mw

    def use_action(self, mw: Middleware) -> Middleware:
        """Add a middleware around each action."""
        self._middleware["action"].append(mw)
        return mw

    def run(self, workflow: Workflow | Mapping[str, Any], *,
            store: Store | Mapping[str, Any] | None = None, on_change: OnChange | None = None,
            log_sink: LogSink | None = None, send: Send | None = None, run_id: str | None = None,
            output_dir: str | Path | None = None, item: Any = None,
            index: int | None = None, spawn: SpawnFn | None = None) -> Outcome:
        """Run `workflow` and report how it ended; action errors never escape.

        `store` is either a ready Store (which then carries its own
        on_change; passing both is a ValueError) or the initial values.
        Store precedence, later wins: the workflow's ``store`` (defaults for
        keys the initial store lacks), then each stage's ``store`` written on
        stage entry, then whatever actions put.
        """
        if isinstance(workflow, Mapping):
            workflow = Workflow.from_dict(dict(workflow))
        if isinstance(store, Store):
            if on_change is not None:
                raise ValueError("pass on_change to the Store you give, not to run()")
        else:
            store = Store(store or {}, on_change=on_change)
        return _Run(self, workflow, store, log_sink, send, run_id or uuid.uuid4().hex,
                    output_dir, item, index, spawn).execute()


class _Run:
    """State of one run: the outcome being built and where exceptions came from."""

    def __init__(self, runner: Runner, workflow: Workflow, store: Store,
                 log_sink: LogSink | None, send: Send | None, run_id: str,
                 output_dir: str | Path | None, item: Any, index: int | None,
                 spawn: SpawnFn | None = None) -> None:
        self.wf, self.store, self.run_id = workflow, store, run_id
        self.spawn = spawn  # ctx.spawn: injected by the sandboxed worker (nested spawns)
        self.registry = runner.registry
        self.mw = {level: tuple(mws) for level, mws in runner._middleware.items()}
        self.output_dir, self.item, self.index = output_dir, item, index
        self.outcome = Outcome(status="ok", run_id=run_id)
        self.user_log_sink, self.user_send = log_sink, send
        # id(exception) -> (exception, stage position, action position): the
        # innermost level an exception crossed first is where it came from.
        self.origin: dict[int, tuple[BaseException, Any, Any]] = {}
        self.actions: dict[tuple[int, int], ActionFn] = {}

    # -- sinks
    def log_sink(self, level: str, message: str, extra: dict) -> None:
        self.outcome.logs.append({"level": level, "message": message, "extra": extra})
        if self.user_log_sink is not None:
            self.user_log_sink(level, message, extra)

    def send(self, type_: str, payload: Any) -> None:
        if self.user_send is not None:
            self.user_send(type_, payload)
        else:
            self.outcome.messages.append((type_, payload))

    def context(self, stage: Stage | None = None, ref: ActionRef | None = None) -> ActionContext:
        return ActionContext(
            store=self.store, log_sink=self.log_sink, send=self.send, workflow=self.wf.id,
            stage=stage.id if stage else None, action=ref.name if ref else None,
            params=ref.params if ref else None, run_id=self.run_id,
            output_dir=self.output_dir, item=self.item, index=self.index, spawn=self.spawn)

    # -- execution
    def execute(self) -> Outcome:
        try:
            self.prepare()
            for key, value in self.wf.store.items():
                if key not in self.store:
                    self.store.put(key, value)
            inv = Invocation("workflow", self.wf, None, None, self.context())
            self.located(None, None, lambda: self.chain("workflow", inv, self.run_stages))
        except Bail as b:
            self.outcome.bailed, self.outcome.bail_reason = True, b.reason
        except (Exception, SystemExit) as e:
            self.outcome.status = "error"
            self.outcome.error = self.describe(e)
        finally:
            self.origin.clear()
        self.outcome.store = self.store.to_dict()
        self.outcome.changed = self.store.changed_keys()
        self.outcome.deleted = self.store.deleted_keys()
        return self.outcome

    def prepare(self) -> None:
        """Import `imports` and resolve every action before anything runs.

        Failing fast means an unknown action in the last stage is reported
        before the first stage has had side effects.
        """
        base = self.wf.base_dir
        if base is not None and self.wf.imports and base not in sys.path:
            sys.path.insert(0, base)   # a workflow file's imports live beside it
        import_modules(self.wf.imports)
        for si, stage in enumerate(self.wf.stages):
            for ai, ref in enumerate(stage.actions):
                fn = self.located((si, stage), (ai, ref), lambda: self.registry.resolve(ref.name))
                self.actions[(si, ai)] = fn

    def run_stages(self) -> None:
        for si, stage in enumerate(self.wf.stages):
            self.located((si, stage), None, lambda: self.run_stage(si, stage))

    def run_stage(self, si: int, stage: Stage) -> None:
        for key, value in stage.store.items():
            self.store.put(key, value)
        inv = Invocation("stage", self.wf, stage, None, self.context(stage), stage_index=si)

        def actions() -> None:
            for ai, ref in enumerate(stage.actions):
                self.located((si, stage), (ai, ref), lambda: self.run_action(si, stage, ai, ref))
        self.chain("stage", inv, actions)

    def run_action(self, si: int, stage: Stage, ai: int, ref: ActionRef) -> None:
        ctx = self.context(stage, ref)
        inv = Invocation("action", self.wf, stage, ref, ctx, stage_index=si, action_index=ai)
        fn = self.actions[(si, ai)]

        def call() -> None:
            result = fn(ctx)
            if result is None:
                return
            if not isinstance(result, Mapping):
                raise TypeError(f"action {ref.name!r} returned {type(result).__name__}; "
                                "return None or a dict of store outputs")
            for key, value in result.items():
                ctx.store.put(key, value)
        self.chain("action", inv, call)

    def chain(self, level: str, inv: Invocation, core: Callable[[], None]) -> None:
        mws = self.mw[level]

        def step(i: int) -> None:
            if i == len(mws):
                core()
            else:
                mws[i](inv, lambda: step(i + 1))
        step(0)

    def located(self, stage: Any, action: Any, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except BaseException as e:
            self.origin.setdefault(id(e), (e, stage, action))
            raise

    def describe(self, e: BaseException) -> dict[str, Any]:
        _, stage, action = self.origin.get(id(e), (e, None, None))
        try:
            tb = "".join(traceback.format_exception(e))
        except Exception:  # formatting can fail too, e.g. under MemoryError
            tb = ""
        try:
            message = str(e)
        except Exception:
            message = ""
        return {"type": type(e).__name__, "message": message, "traceback": tb,
                "stage": stage[1].id if stage else None,
                "action": action[1].name if action else None,
                "stage_index": stage[0] if stage else None,
                "action_index": action[0] if action else None}
