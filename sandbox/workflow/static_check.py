"""Check a workflow's action names before anything runs, without running its code.

The launcher must not import an untrusted action module to find out whether
it defines an action: importing runs the module. So this reads the source
instead: it finds each module of the workflow's ``imports`` (and of each
``module:function`` reference) on the child's search path, parses it with
`ast`, and collects the names registered with a literal ``@action``,
``@action()`` or ``@action("name")`` decorator. A name that is neither
registered in this process already nor found that way is an error before the
sandbox starts (the CLI exits 2). What cannot be read (an extension module, a
name registered dynamically) is left to the child, which reports it as an
error of the run: this check only refuses what it can prove unknown.
"""
from __future__ import annotations

import ast
import functools
import os
import sys
from typing import Iterable, Sequence

from sandbox.errors import WorkflowError
from sandbox.workflow.model import Workflow
from sandbox.workflow.registry import Registry, default_registry

_UNREADABLE = object()


def _top_level_dirs(top: str) -> list[str]:
    """Where installed finders (an editable install's, say) put package `top`.

    Asks each meta-path finder for the top-level name only: `find_spec` locates
    without executing, whereas importing `a.b` would run `a/__init__.py`.
    """
    import importlib.machinery
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            continue    # it searches this process's sys.path, which the child does not have
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            spec = find(top, None)
        except Exception:
            continue
        if spec is None:
            continue
        if spec.submodule_search_locations:
            return [os.path.dirname(p) for p in spec.submodule_search_locations]
        if spec.origin and spec.origin.endswith(".py"):
            return [os.path.dirname(spec.origin)]
    return []


@functools.cache
def child_base_path() -> tuple[str, ...]:
    """The sandboxed interpreter's sys.path before the run's code_paths: that of
    `python -I` (what the fork server and monitors run), never this process's
    (which may hold the cwd, a script's directory or PYTHONPATH: a module found
    there would pass this check and then fail in the child)."""
    import json
    import subprocess
    try:
        out = subprocess.run([sys.executable, "-I", "-c",
                              "import json, sys; print(json.dumps(sys.path))"],
                             capture_output=True, text=True, timeout=60, check=True)
        return tuple(p for p in json.loads(out.stdout) if p)
    except (OSError, ValueError, subprocess.SubprocessError):
        return tuple(p for p in sys.path if p and os.path.isabs(p) and
                     p != os.path.dirname(os.path.abspath(sys.argv[0] or ".")))


def find_source(module: str, path: Sequence[str]) -> str | None | object:
    """The .py file of `module` on `path`; None if absent; _UNREADABLE if present
    in a form that cannot be parsed (extension, built-in)."""
    if module in sys.builtin_module_names:
        return _UNREADABLE
    parts = module.split(".")
    for base in [*path, *_top_level_dirs(parts[0])]:
        if not base or not os.path.isdir(base):
            continue
        stem = os.path.join(base, *parts)
        for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
            if os.path.isfile(candidate):
                return candidate
        if os.path.isdir(stem):
            return _UNREADABLE  # a namespace package: no source of its own
        parent = os.path.join(base, *parts[:-1])
        if os.path.isdir(parent) and any(n.startswith(parts[-1] + ".") and not n.endswith(".py")
                                         for n in os.listdir(parent)):
            return _UNREADABLE  # compiled extension module
    return None


class _Actions(ast.NodeVisitor):
    """Names registered by literal @action decorators; top-level functions and methods."""

    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.defined: set[str] = set()
        self._scope: list[str] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.defined.add(".".join([*self._scope, node.name]))
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            name = target.attr if isinstance(target, ast.Attribute) else \
                getattr(target, "id", None)
            if name != "action":
                continue
            if call and call.args and isinstance(call.args[0], ast.Constant) \
                    and isinstance(call.args[0].value, str):
                self.registered.add(call.args[0].value)
            else:
                self.registered.add(node.name)

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.defined.add(".".join([*self._scope, node.name]))
        self._scope.append(node.name)
        self.generic_visit(node)
        self._scope.pop()


_SCANNED: dict[str, tuple[tuple[int, int, int], _Actions]] = {}


def _scan(source: str) -> _Actions:
    """Parse once per version of the file: parallel and nested spawns check the
    same modules for every run."""
    st = os.stat(source)
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    hit = _SCANNED.get(source)
    if hit is not None and hit[0] == key:
        return hit[1]
    with open(source, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=source)
    found = _Actions()
    found.visit(tree)
    if len(_SCANNED) > 256:
        _SCANNED.clear()
    _SCANNED[source] = (key, found)
    return found


def check_actions(workflow: Workflow, code_paths: Iterable[str] = (), *,
                  registry: Registry | None = None, where: str = "<workflow>") -> None:
    """Raise WorkflowError for an action name that provably does not exist."""
    registry = registry or default_registry
    path = [os.path.abspath(p) for p in code_paths] + list(child_base_path())
    registered: set[str] = set(registry.names())
    complete = True
    for module in workflow.imports:
        src = find_source(module, path)
        if src is None:
            raise WorkflowError(f"{where}: imports: module {module!r} not found on the "
                                f"child's path (code paths: {', '.join(code_paths) or 'none'})")
        if src is _UNREADABLE:
            complete = False
            continue
        registered |= _scan(src).registered
    for si, stage in enumerate(workflow.stages):
        for ai, ref in enumerate(stage.actions):
            at = f"{where}: stages[{si}].actions[{ai}]"
            if ":" in ref.name:
                module, _, attr = ref.name.partition(":")
                src = find_source(module, path)
                if src is None:
                    raise WorkflowError(f"{at}: action {ref.name!r}: module {module!r} not "
                                        "found on the child's path")
                if src is not _UNREADABLE and attr not in _scan(src).defined:
                    raise WorkflowError(f"{at}: action {ref.name!r}: module {module!r} "
                                        f"defines no {attr!r}")
            elif ref.name not in registered and complete:
                known = ", ".join(sorted(registered)) or "none"
                raise WorkflowError(f"{at}: unknown action {ref.name!r} (known: {known}; "
                                    "register it with @action in a module listed under "
                                    "\"imports\", or use 'module:function')")
