"""What `Launcher.spawn` was given to run, told apart: a command or a workflow.

A command (a list of strings) is recognised before the workflow package is
imported: that is the CLI's fast path (`sandbox exec` imports nothing of the
workflow side). Anything else that is not a Workflow, a workflow dict or the path
of a workflow .json file is an `InputError`, before anything runs.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from sandbox.errors import InputError


def classify(target: object) -> tuple[str, Any]:
    """("exec", argv) or ("workflow", Workflow)."""
    if isinstance(target, (list, tuple)) and target and all(isinstance(a, str) for a in target):
        return "exec", list(target)  # before importing the workflow package: the CLI's fast path
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


def with_dir(code_paths: Sequence[str], wf_dir: str) -> list[str]:
    """`code_paths` plus the workflow file's directory (once): as `sandbox run`, a
    workflow file's action code lives beside it."""
    paths = [os.path.abspath(p) for p in code_paths]
    return paths if wf_dir in paths else [*paths, wf_dir]
