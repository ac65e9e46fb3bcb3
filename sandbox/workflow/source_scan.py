"""Read an action module's source for the names it registers, in a bounded worker.

Why a worker: the source may have been written by a sandbox (a nested request
can name a module in a directory some sandbox may write). `ast.parse` costs
about 500 times the file's size in memory and holds the GIL throughout: done
in the launcher, a 2 MiB file took it from 17 MB to 1 GB and stalled every
other tenant's run. So the launcher never parses: it runs this file as a
script (`python -I -S source_scan.py FILE`, standard library only, so it
needs no path), which limits itself before it reads anything and prints one
JSON line. The launcher bounds the file's size before, the worker's wall time
and output after. Whatever fails (too big, not a regular file, not Python,
over a limit) is "unreadable": the launcher's check then leaves the name to
the child, which reports an unknown action as an error of its own run.
"""
from __future__ import annotations

import ast
import json
import os
import resource
import stat
import sys

MAX_SOURCE = 512 << 10       # bytes of source the worker will parse
MAX_NAMES = 4096             # names reported per kind; more is "unreadable"
WORKER_AS = 512 << 20        # the worker's address space
WORKER_CPU = 5               # seconds of CPU


class Actions(ast.NodeVisitor):
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


def read_bounded(path: str) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_SOURCE bytes.
    O_NONBLOCK: a FIFO planted under a .py name cannot block the reader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > MAX_SOURCE:
            raise ValueError(f"larger than {MAX_SOURCE} bytes")
        data = os.read(fd, MAX_SOURCE + 1)
        if len(data) > MAX_SOURCE:
            raise ValueError(f"larger than {MAX_SOURCE} bytes")
        return data
    finally:
        os.close(fd)


def scan(data: bytes, filename: str = "<source>") -> dict[str, list[str]]:
    found = Actions()
    found.visit(ast.parse(data, filename=filename))
    return {"registered": sorted(found.registered), "defined": sorted(found.defined)}


def main(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_AS, WORKER_AS))
    resource.setrlimit(resource.RLIMIT_CPU, (WORKER_CPU, WORKER_CPU + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        out = scan(read_bounded(argv[1]), argv[1])
        if any(len(v) > MAX_NAMES for v in out.values()):
            raise ValueError(f"more than {MAX_NAMES} names")
    except (OSError, ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:200]}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
