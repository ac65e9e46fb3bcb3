"""No import circle in the package (issue 14: "no module imports another that
imports it back"), so that none can come back unseen.

The graph is read from the source (ast), not by importing: a module's edges are
every `import` and `from ... import` it holds, at the top or inside a function
(an import deferred into a function still ties the two modules together; it
only hides the circle from Python's import machinery). Not counted:

- imports under `if TYPE_CHECKING:` (annotations only; they never run);
- the implicit import of a module's parent packages (`import a.b.c` runs
  a/__init__ and a/b/__init__ first): a package whose __init__ re-exports its
  own modules would otherwise form a circle with each of them.

`from pkg import name` is an edge to the module pkg.name when there is one,
else to pkg itself.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules(root: Path, package: str = "sandbox") -> dict[str, Path]:
    """Dotted name -> source file, for every module of `package` under `root`."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the nodes inside an `if TYPE_CHECKING:` body."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` (source `path`) imports."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_only(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    out.add(f"{source}.{alias.name}")
                elif source in known:
                    out.add(source)
    out.discard(name)
    return out


def graph(root: Path, package: str = "sandbox") -> dict[str, set[str]]:
    known = modules(root, package)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative),
    each sorted, the list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(g):
        if start in index:
            continue
        work = [(start, iter(sorted(g[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(g[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def describe(g: dict[str, set[str]], circle: list[str]) -> str:
    members = set(circle)
    return "; ".join(f"{a} -> {b}" for a in circle for b in sorted(g[a] & members))


def test_the_package_has_no_import_circle() -> None:
    g = graph(ROOT)
    assert len(g) > 100 and "sandbox.protocol" in g       # the walk found the package
    assert "sandbox.isolation.libc" in g["sandbox.isolation.mounts"]
    found = circles(g)
    assert found == [], "\n".join(describe(g, c) for c in found)


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        p = tmp_path / "sandbox" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return graph(tmp_path)


def test_the_check_sees_a_circle_hidden_in_a_function(tmp_path: Path) -> None:
    g = _package(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/one.py": "from sandbox.a.two import f\n",
        "a/two.py": "def f():\n    from . import one\n    return one\n",
        "b.py": "import sandbox.c\n",
        "c.py": "def g():\n    from sandbox import b\n",
        "d.py": "from sandbox.a import one\n",
    })
    assert circles(g) == [["sandbox.a.one", "sandbox.a.two"], ["sandbox.b", "sandbox.c"]]
    assert describe(g, ["sandbox.a.one", "sandbox.a.two"]) == \
        "sandbox.a.one -> sandbox.a.two; sandbox.a.two -> sandbox.a.one"


def test_annotations_only_and_parent_packages_are_no_circle(tmp_path: Path) -> None:
    g = _package(tmp_path, {
        "__init__.py": "from sandbox.run import go\n",   # re-exports its own module
        "run.py": "import typing\nif typing.TYPE_CHECKING:\n    from sandbox.ctx import Ctx\n"
                  "from sandbox.ctx import make\n",
        "ctx.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                  "    from sandbox.run import go\n",
    })
    assert g["sandbox"] == {"sandbox.run"} and g["sandbox.ctx"] == set()
    assert circles(g) == []
