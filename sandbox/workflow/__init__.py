"""Workflows -> stages -> actions sharing a JSON key-value store (the GoStage model).

`Runner` executes a `Workflow` in this process; the launcher runs the same
Runner inside the sandboxed child with IPC-backed callables plugged in.
See docs/workflows.md for the JSON format and the execution rules.
"""
from sandbox.workflow.context import ActionContext, Bail, Store
from sandbox.workflow.model import ActionRef, Stage, Workflow, load_workflow
from sandbox.workflow.registry import Registry, action, default_registry, resolve_action
from sandbox.workflow.runner import Invocation, Outcome, Runner

__all__ = [
    "ActionContext", "ActionRef", "Bail", "Invocation", "Outcome", "Registry", "Runner",
    "Stage", "Store", "Workflow", "action", "default_registry", "load_workflow",
    "resolve_action",
]
