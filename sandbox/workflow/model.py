"""Workflows as typed, immutable data, loaded from JSON.

A workflow is stages run in order, each stage a list of actions run in order,
all sharing one key-value store (the GoStage model). The definition crosses
from the parent to the sandboxed child as a plain dict (`to_dict` /
`from_dict`), so it never needs pickling and the child can validate it again.

Validation is strict on purpose: a misspelt key (``"nmae"``) is an error that
names the file and the JSON path, not a silently ignored field that makes the
action run with defaults.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from sandbox.errors import WorkflowError
from sandbox.workflow.jsonvalue import copy_json, json_problem

WORKFLOW_KEYS = ("id", "name", "description", "tags", "policy", "imports", "store", "stages")
STAGE_KEYS = ("id", "name", "description", "store", "actions")
ACTION_KEYS = ("name", "params")


@dataclass(frozen=True)
class ActionRef:
    """A use of an action: its registered name or ``module:function``, and params."""
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": copy_json(dict(self.params))}


@dataclass(frozen=True)
class Stage:
    """A phase of a workflow; `store` is written into the workflow store on entry."""
    id: str
    name: str = ""
    actions: tuple[ActionRef, ...] = ()
    store: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name or self.id, "description": self.description,
                "store": copy_json(dict(self.store)),
                "actions": [a.to_dict() for a in self.actions]}


@dataclass(frozen=True)
class Workflow:
    """A whole workflow definition.

    `store` holds defaults (the caller's initial store wins over them);
    `policy` names the sandbox policy to run it under (``"strict"``);
    `imports` lists modules to import before action names are resolved, so
    a fresh child process knows the actions those modules register.
    """
    id: str
    name: str = ""
    tags: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = ()
    store: Mapping[str, Any] = field(default_factory=dict)
    policy: str | None = None
    description: str = ""
    imports: tuple[str, ...] = ()
    # The directory of the file it was loaded from: its `imports` are found there
    # (the launcher adds it to code_paths, the Runner to sys.path). Not part of
    # the definition: not in to_dict, not compared.
    base_dir: str | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "name": self.name or self.id, "description": self.description,
            "tags": list(self.tags), "policy": self.policy, "imports": list(self.imports),
            "store": copy_json(dict(self.store)),
            "stages": [s.to_dict() for s in self.stages],
        }
        return out

    @classmethod
    def from_dict(cls, d: Any, *, source: str = "<workflow>") -> "Workflow":
        """Validate a parsed JSON object and build the Workflow.

        Every error is a WorkflowError reading ``<source>: <json path>: <what>``.
        """
        return _Parser(source).workflow(d)


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow JSON file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise WorkflowError(f"{p}: cannot read workflow: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise WorkflowError(f"{p}: workflow is not UTF-8: {e}") from None
    wf = Workflow.from_dict(parse_json(text, source=str(p)), source=str(p))
    base = os.path.dirname(os.path.abspath(p))
    policy = wf.policy
    if policy is not None and _is_policy_path(policy) and not os.path.isabs(policy):
        policy = os.path.join(base, os.path.expanduser(policy))  # relative to the file
    return dataclasses.replace(wf, policy=policy, base_dir=base)


def _is_policy_path(ref: str) -> bool:
    """A file path, not a policy name: as sandbox.policy.search.is_name decides."""
    from sandbox.policy.search import is_name
    return not is_name(ref)


def parse_json(text: str, *, source: str = "<workflow>") -> Any:
    """json.loads that refuses duplicate keys and NaN/Infinity, with a located error.

    Python's json accepts both silently; a duplicated key would make one of
    two values vanish without a word.
    """
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON (use a number or null)")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise WorkflowError(f"{source}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except ValueError as e:
        raise WorkflowError(f"{source}: invalid JSON: {e}") from None


class _Parser:
    """Walks the JSON object, carrying the source name for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> WorkflowError:
        err = WorkflowError(f"{self.source}: {path + ': ' if path else ''}{message}")
        err.file, err.path = self.source, path  # type: ignore[attr-defined]
        return err

    def obj(self, d: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(path, f"expected an object, got {_kind(d)}")
        for key in d:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(path, f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")
        return d

    def text(self, d: dict[str, Any], key: str, path: str, *, required: bool = False,
             default: str | None = "") -> str | None:
        if key not in d:
            if required:
                raise self.fail(path, f"missing required key {key!r}")
            return default
        value = d[key]
        if not isinstance(value, str):
            raise self.fail(_join(path, key), f"expected a string, got {_kind(value)}")
        if key in ("id", "name", "policy") and not value.strip():
            raise self.fail(_join(path, key), "must not be empty")
        return value

    def strings(self, d: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = d.get(key, [])
        if not isinstance(value, list):
            raise self.fail(_join(path, key), f"expected a list of strings, got {_kind(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.fail(f"{_join(path, key)}[{i}]", f"expected a non-empty string, got {_kind(item)}")
        return tuple(value)

    def json_object(self, d: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        """d[key] (default {}), checked to be a JSON object of JSON values; a copy."""
        value = d.get(key, {})
        where = _join(path, key)
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {_kind(value)}")
        problem = json_problem(value, where)
        if problem:
            raise self.fail("", problem)
        return copy_json(value)

    def store(self, d: dict[str, Any], path: str) -> dict[str, Any]:
        return self.json_object(d, "store", path)

    def workflow(self, d: Any) -> Workflow:
        d = self.obj(d, "", WORKFLOW_KEYS)
        wid = self.text(d, "id", "", default=None) or uuid.uuid4().hex
        stages_raw = d.get("stages")
        if "stages" not in d:
            raise self.fail("", "missing required key 'stages'")
        if not isinstance(stages_raw, list) or not stages_raw:
            raise self.fail("stages", f"expected a non-empty list of stages, got {_kind(stages_raw)}")
        stages = tuple(self.stage(s, f"stages[{i}]", i) for i, s in enumerate(stages_raw))
        seen: dict[str, int] = {}
        for i, s in enumerate(stages):
            if s.id in seen:
                raise self.fail(f"stages[{i}].id", f"duplicate stage id {s.id!r} (also stages[{seen[s.id]}])")
            seen[s.id] = i
        policy = d.get("policy")
        if policy is not None:
            policy = self.text(d, "policy", "")
        return Workflow(
            id=wid, name=self.text(d, "name", "") or wid, tags=self.strings(d, "tags", ""),
            stages=stages, store=self.store(d, ""), policy=policy,
            description=self.text(d, "description", "") or "",
            imports=self.strings(d, "imports", ""),
        )

    def stage(self, d: Any, path: str, index: int) -> Stage:
        d = self.obj(d, path, STAGE_KEYS)
        sid = self.text(d, "id", path, default=None)
        name = self.text(d, "name", path, default=None)
        sid = sid or name or f"stage{index + 1}"
        actions_raw = d.get("actions")
        if "actions" not in d:
            raise self.fail(path, "missing required key 'actions'")
        if not isinstance(actions_raw, list) or not actions_raw:
            raise self.fail(_join(path, "actions"),
                            f"expected a non-empty list of actions, got {_kind(actions_raw)}")
        actions = tuple(self.action(a, f"{path}.actions[{i}]") for i, a in enumerate(actions_raw))
        return Stage(id=sid, name=name or sid, actions=actions, store=self.store(d, path),
                     description=self.text(d, "description", path) or "")

    def action(self, d: Any, path: str) -> ActionRef:
        if isinstance(d, str):  # shorthand: "hello" == {"name": "hello"}
            d = {"name": d}
        d = self.obj(d, path, ACTION_KEYS)
        name = self.text(d, "name", path, required=True)
        assert name is not None
        if name.count(":") > 1 or name.startswith(":") or name.endswith(":"):
            raise self.fail(_join(path, "name"),
                            f"{name!r} is neither a registered name nor 'package.module:function'")
        return ActionRef(name=name, params=self.json_object(d, "params", path))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    """JSON-flavoured type names, since the author wrote JSON, not Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "empty list" if not value else "list"
    if isinstance(value, dict):
        return "empty object" if not value else "object"
    return type(value).__name__
