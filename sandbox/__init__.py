"""sandbox: run untrusted actions and programs under Linux OS isolation.

The whole public API (imported lazily, so `sandbox exec` stays fast to start):

    Launcher(policy=None, budget=None, capture_output=False, start="forkserver",
             max_concurrent=64, audit_db=None)      a context manager; close()
        .spawn(workflow_or_command, policy=..., store=..., timeout=...,
               code_paths=[...]) -> RunResult
        .start(...) -> RunHandle: .wait(timeout), .cancel(), .result(), .run_id, .pid
        .on(message_type, handler) -> handler_id;  .off(handler_id)
        .use(middleware); .before_spawn(fn); .after_spawn(fn); .on_child_message(fn)
    run_parallel(launcher, workflow, items, concurrency=4, fail_fast=True) -> [RunResult]
    Metrics, HmacAuth, redaction, transform   built-in IPC middleware (sandbox.middleware)
    RunResult                       status, reason, exit_code, store, logs, error, ...
    Status                          a StrEnum: ok, error, timeout, ..., cancelled
    Workflow, Stage, ActionRef, load_workflow
    action                          decorator registering an action by name
    ActionContext, Store            what an action receives
    Runner                          run a workflow in-process, with middleware
    Policy, load_policy, decide     policies and the file-operation engine
    SandboxError, InputError, PolicyError, WorkflowError, SetupError, ProtocolError,
    OutputPathError                 an unsafe --output/--result/--audit-log (nothing ran)
"""
from __future__ import annotations

import importlib

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (mypy knows the name)

__version__ = "0.1.0"

_EXPORTS = {
    "Launcher": "sandbox.launcher.launcher",
    "run_parallel": "sandbox.parallel",
    "Metrics": "sandbox.middleware", "HmacAuth": "sandbox.middleware",
    "redaction": "sandbox.middleware", "transform": "sandbox.middleware",
    "SpawnRequest": "sandbox.middleware", "SpawnInfo": "sandbox.middleware",
    "RunResult": "sandbox.launcher.result",
    "Status": "sandbox.launcher.result",
    "RunHandle": "sandbox.launcher.handle",
    "Budget": "sandbox.launcher.session",
    "Workflow": "sandbox.workflow",
    "Stage": "sandbox.workflow",
    "ActionRef": "sandbox.workflow",
    "load_workflow": "sandbox.workflow",
    "action": "sandbox.workflow",
    "ActionContext": "sandbox.workflow",
    "Store": "sandbox.workflow",
    "Runner": "sandbox.workflow",
    "Policy": "sandbox.policy",
    "load_policy": "sandbox.policy",
    "decide": "sandbox.policy",
    "SandboxError": "sandbox.errors",
    "InputError": "sandbox.errors",
    "OutputPathError": "sandbox.errors",
    "PolicyError": "sandbox.errors",
    "WorkflowError": "sandbox.errors",
    "SetupError": "sandbox.errors",
    "ProtocolError": "sandbox.errors",
}

# Literal, so type checkers know the exports (a test keeps it equal to _EXPORTS).
__all__ = [
    "ActionContext", "ActionRef", "Budget", "HmacAuth", "InputError", "Launcher", "Metrics",
    "OutputPathError", "Policy", "PolicyError", "ProtocolError", "RunHandle", "RunResult", "Runner",
    "SandboxError", "SetupError", "SpawnInfo", "SpawnRequest", "Stage", "Status", "Store",
    "Workflow", "WorkflowError", "action", "decide", "load_policy", "load_workflow",
    "redaction", "run_parallel", "transform",
]

if TYPE_CHECKING:   # what type checkers see; at run time __getattr__ imports lazily
    from sandbox.errors import (InputError, OutputPathError, PolicyError, ProtocolError,
                                SandboxError, SetupError, WorkflowError)
    from sandbox.launcher.handle import RunHandle
    from sandbox.launcher.launcher import Launcher
    from sandbox.launcher.result import RunResult, Status
    from sandbox.launcher.session import Budget
    from sandbox.middleware import (HmacAuth, Metrics, SpawnInfo, SpawnRequest, redaction,
                                    transform)
    from sandbox.parallel import run_parallel
    from sandbox.policy import Policy, decide, load_policy
    from sandbox.workflow import (ActionContext, ActionRef, Runner, Stage, Store, Workflow,
                                  action, load_workflow)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
