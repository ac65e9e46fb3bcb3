"""mypy on the whole package (config: [tool.mypy] in pyproject.toml), and no `Any`
at the module boundaries of the start path.

Marked `typecheck`: scripts/test.sh runs it once, in the root pass (the
unprivileged pass deselects it), and prints what mypy checked.

"Module boundary": the signature of a public function, or of a public method
(and ``__init__``) of a public class. Data that crosses a process boundary as
JSON is typed `sandbox.jsontypes.JSON`, not `Any`.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.typecheck

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "sandbox"

# The modules the launcher uses to start a run (issue 14's start path).
START_PATH = [
    "launcher/launcher.py", "launcher/monitors.py", "launcher/session.py",
    "launcher/prepare.py", "launcher/assemble.py", "launcher/slots.py",
    "launcher/workflow_store.py", "launcher/keep.py", "launcher/spec.py",
    "forkserver.py", "protocol/__init__.py", "protocol/bounds.py", "protocol/report.py",
    "protocol/messages.py", "protocol/pid1.py", "protocol/codec.py", "protocol/wire.py",
    "protocol/fixed.py", "jsontypes.py",
    "monitor/main.py", "monitor/runspec.py", "monitor/stubs.py", "monitor/supervisor.py",
    "monitor/host.py", "monitor/zygote.py", "monitor/preload.py", "monitor/pool_stubs.py",
    "monitor/pool_key.py", "monitor/interned.py",
    "monitor/pools.py",
    "sandboxee/stub.py", "sandboxee/entry.py",
    "isolation/contain.py", "isolation/context.py", "isolation/namespaces.py",
    "isolation/mounts.py", "isolation/mount_steps.py", "isolation/beneath.py", "isolation/network.py",
    "isolation/limits.py", "isolation/privileges.py", "isolation/landlock.py",
    "isolation/landlock_abi.py", "isolation/landlock_around.py", "isolation/prebuilt.py",
    "isolation/seccomp.py", "isolation/libc.py", "isolation/sysview.py",
    "policy/plan.py",
]

# Next to the start path, held to the same rules: sandbox.protocol's neighbours (what it
# imports, what imports it) and the thin `sandbox exec` client.
NEXT_TO_START = [
    "errors.py", "launcher/exec_failure.py", "launcher/signals.py",
    "monitor/copy_out.py", "monitor/workdir_export.py", "netproxy/inside.py",
    "monitor/notify_args.py", "monitor/notify_dispatch.py", "monitor/run_end.py",
    "monitor/setup_messages.py", "monitor/caller_control.py", "monitor/notify_loop.py",
    "thin/client.py", "thin/daemon.py", "thin/entry.py", "thin/shared.py", "thin/wire.py",
]

# Checked strictly, but their public signatures still take Any, and why:
STRICT_ONLY = [
    # the public IPC frames carry whatever JSON the program sends (docs/ipc-protocol.md);
    # typing them JSON moves ~40 checks into every reader of a payload
    "ipc/frames.py",
    # its summary is the tally's dict of JSON (AuditSummary is built from it)
    "monitor/notify_store.py",
    # its records are notify_loop's record tuples, and the syscall table's entries
    "monitor/fast_keys.py",
    # a spawn target told apart: argv or a Workflow, named by the mode string beside it
    # (every reader of the pair branches on the mode, as the launcher does)
    "launcher/target.py",
]

# Signatures that must say Any, and why.
EXEMPT = {
    # a dataclass field specifier: like dataclasses.field, it stands for the field's value
    "protocol/bounds.py bound",
}


def _mentions_any(node: ast.expr | None) -> bool:
    if node is None:
        return False
    if isinstance(node, ast.Constant) and isinstance(node.value, str):   # "quoted" annotations
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return "Any" in node.value
    return any((isinstance(n, ast.Name) and n.id == "Any")
               or (isinstance(n, ast.Attribute) and n.attr == "Any") for n in ast.walk(node))


def boundary_problems(source: str, name: str = "<src>") -> list[str]:
    """Public signatures in `source` that take or return Any, or are unannotated."""
    out: list[str] = []

    def check(f: ast.FunctionDef | ast.AsyncFunctionDef, owner: str) -> None:
        where = f"{name}:{f.lineno} {owner}{f.name}"
        a = f.args
        for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]:
            if arg.arg in ("self", "cls"):
                continue
            if arg.annotation is None:
                out.append(f"{where}({arg.arg}) unannotated")
            elif _mentions_any(arg.annotation):
                out.append(f"{where}({arg.arg}: Any)")
        if f.returns is None and f.name != "__init__":
            out.append(f"{where} -> unannotated")
        elif _mentions_any(f.returns):
            out.append(f"{where} -> Any")

    for node in ast.parse(source, name).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and not node.name.startswith("_"):
            check(node, "")
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                        not m.name.startswith("_") or m.name == "__init__"):
                    check(m, node.name + ".")
    return out


def test_mypy_passes_on_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    p = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                        "--cache-dir=/dev/null"], capture_output=True, text=True, cwd=ROOT,
                       timeout=900, env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    summary = (p.stdout.strip().splitlines() or ["(no output)"])[-1]
    with capsys.disabled():
        print(f"\n== mypy (pyproject.toml [tool.mypy], files = sandbox/): {summary}")
    assert p.returncode == 0, p.stdout + p.stderr
    assert summary.startswith("Success: no issues found in")


def test_no_any_at_the_start_path_boundaries() -> None:
    found = {rel: [p for p in boundary_problems((PKG / rel).read_text(), rel)
                   if f"{rel} {p.split(' ', 1)[1].split('(')[0].split(' ')[0]}" not in EXEMPT]
             for rel in START_PATH + NEXT_TO_START}
    assert [p for ps in found.values() for p in ps] == []


def test_boundary_check_sees_signatures_not_bodies() -> None:
    src = ('from typing import Any\n'
           'def ok(x: int) -> dict[str, int]:\n    y: Any = x\n    return {"y": y}\n'
           'def _private(x: Any) -> Any: ...\n'
           'def bad(x: "dict[str, Any]") -> None: ...\n'
           'def bare(x): ...\n'
           'class C:\n    def __init__(self, v: typing.Any) -> None: ...\n'
           '    def m(self) -> Any: ...\n    def _h(self, z: Any) -> None: ...\n')
    got = boundary_problems(src)
    assert [g.split(" ", 1)[1] for g in got] == [
        "bad(x: Any)", "bare(x) unannotated", "bare -> unannotated",
        "C.__init__(v: Any)", "C.m -> Any"]


def test_the_start_path_is_checked_strictly():
    """pyproject.toml's strict mypy override (every definition typed, no bare generic,
    no Any returned) names every module of the start path and those next to it, and no
    module that is gone."""
    import tomllib
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    strict = [o for o in cfg["tool"]["mypy"]["overrides"] if o.get("disallow_untyped_defs")]
    assert len(strict) == 1, strict
    assert all(strict[0].get(flag) for flag in (
        "disallow_incomplete_defs", "disallow_any_generics", "warn_return_any",
        "check_untyped_defs"))
    named = set(strict[0]["module"])
    want = {("sandbox." + m[:-3].replace("/", ".")).removesuffix(".__init__")
            for m in START_PATH + NEXT_TO_START + STRICT_ONLY}
    assert want <= named, sorted(want - named)
    where = {m: PKG / m[len("sandbox."):].replace(".", "/") for m in named}
    assert all(p.with_suffix(".py").exists() or (p / "__init__.py").exists()
               for p in where.values()), sorted(named)
