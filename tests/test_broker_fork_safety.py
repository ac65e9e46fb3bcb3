"""The broker process is forked by the monitor host, which has threads (the shared end
of runs, relays, notification loops). A fork copies only the forking thread; a lock
another thread held at that instant stays held in the child for ever. So the code the
broker child runs after the fork must take no lock: every module it can reach (the
transitive imports of broker_process, and of the engine objects it is handed) is kept
free of `threading`, `logging`, `queue`, `multiprocessing` and `concurrent`, judged
from the source (AST, so a comment cannot fool it)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What broker_process's child runs between the fork and its exit: _confine and _serve,
# and the objects it is given (the run's AuditEngine and its policy Engine).
ROOTS = ["sandbox.monitor.broker_process", "sandbox.audit.verdicts", "sandbox.policy.engine"]
LOCKING = {"threading", "logging", "queue", "multiprocessing", "concurrent"}
# Reachable by import but not run by the broker child, and why.
NOT_RUN = {
    # reached through the package's __init__ (engine imports sandbox.policy.globs), never
    # run by the broker child (the launcher plans; the broker only decides);
    # it names threading.Event as the type of a cancel token
    "sandbox.policy.planner",
}


def _path(module: str) -> Path | None:
    p = ROOT.joinpath(*module.split("."))
    for cand in (p.with_suffix(".py"), p / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def locking_modules(roots: list[str]) -> dict[str, set[str]]:
    """Modules reachable from `roots` (within the package) that import a locking one."""
    seen: set[str] = set()
    todo, bad = list(roots), {}
    while todo:
        mod = todo.pop()
        path = _path(mod)
        if mod in seen or path is None:
            continue
        seen.add(mod)
        imports = _imports(path)
        hit = {i.split(".")[0] for i in imports} & LOCKING
        if hit:
            bad[mod] = hit
        todo += [i for i in imports if i.startswith("sandbox.")]
    return bad


def test_the_broker_childs_code_takes_no_lock():
    bad = locking_modules(ROOTS)
    assert set(bad) <= NOT_RUN, bad
    assert NOT_RUN <= set(bad) | set(), "a NOT_RUN entry no longer needed: drop it"


def test_the_check_sees_a_lock():
    """The check itself can fail: a module that imports threading is caught."""
    assert "sandbox.monitor.host" in locking_modules(["sandbox.monitor.host"])
