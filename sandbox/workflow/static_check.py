"""Check a workflow's action names before anything runs, without running its code.

The launcher must not import an untrusted action module to find out whether
it defines an action: importing runs the module. So this reads the source
instead: it finds each module of the workflow's ``imports`` (and of each
``module:function`` reference) on the child's search path, parses it with
`ast`, and collects the names registered with a literal ``@action``,
``@action()`` or ``@action("name")`` decorator. A name that is neither
registered in this process already nor found that way is an error before the
sandbox starts (the CLI exits 2). What cannot be read (an extension module, a
name registered dynamically, a source over `source_scan.MAX_SOURCE`) is left
to the child, which reports it as an error of the run: this check only
refuses what it can prove unknown.

The source may be the work of a sandbox (a nested request names modules, and
some sandbox may write into a directory on the path), so module names must be
dotted identifiers (never a path), and the parse runs in a bounded worker
process (`source_scan.py`): the launcher itself never parses what it reads.
"""
from __future__ import annotations

import functools
import importlib.machinery
import json
import keyword
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sandbox.errors import WorkflowError
from sandbox.workflow import source_scan
from sandbox.workflow.model import Workflow
from sandbox.workflow.registry import Registry, default_registry

_UNREADABLE = object()


def _top_level_dirs(top: str) -> list[str]:
    """Where installed finders (an editable install's, say) put package `top`.

    Asks each meta-path finder for the top-level name only: `find_spec` locates
    without executing, whereas importing `a.b` would run `a/__init__.py`.
    """
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
        if any(os.path.isfile(stem + suffix)
               for suffix in importlib.machinery.EXTENSION_SUFFIXES):
            return _UNREADABLE  # compiled extension module (one stat per suffix: no
            # listing of a directory a sandbox may have filled)
    return None


@dataclass(frozen=True)
class Scanned:
    """What a module's source registers (`@action` names) and defines (functions,
    classes, methods). `readable` False: the worker could not say (too big, not a
    regular file, not Python, over a limit); the child decides at run time."""
    registered: frozenset[str] = frozenset()
    defined: frozenset[str] = frozenset()
    readable: bool = True


_NOT_READ = Scanned(readable=False)
WORKER = source_scan.__file__
WORKER_WALL = 10.0       # seconds; the worker also limits its own CPU and memory
WORKER_OUTPUT = 1 << 20  # bytes of JSON accepted back
MAX_MODULE_NAME = 256
MAX_SCANNED = 2 << 20   # bytes of source one check parses in all; the rest: not read
MAX_WORKERS = 8         # worker interpreters one check may start; the rest: not read
MAX_WORKERS_PER_RUN = 32  # ... and the checks of one run's nested requests, together
CACHE_BYTES = 8 << 20    # estimated memory of the scans kept (names), all runs together
_SCANNED: dict[str, tuple[tuple[int, int, int], Scanned]] = {}
_cached_bytes = 0   # _cost of the entries of _SCANNED
_lock = threading.Lock()


def _scan(source: str, budget: "_Budget | None" = None) -> Scanned:
    """Scan once per version of the file (parallel and nested spawns check the same
    modules for every run), in the bounded worker (source_scan.py), never here."""
    try:
        st = os.stat(source)
    except OSError:
        return _NOT_READ
    if st.st_size > source_scan.MAX_SOURCE or (budget is not None
                                               and not budget.take(st.st_size)):
        return _NOT_READ   # decided without reading a byte
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _lock:
        hit = _SCANNED.get(source)
    if hit is not None and hit[0] == key:
        return hit[1]
    if budget is not None and not budget.start_worker():
        return _NOT_READ
    found = _run_worker(source)
    _remember(source, key, found)
    return found


def _cost(found: Scanned) -> int:
    """Estimated memory of an entry: its names (a str object is ~50 bytes plus its
    characters, a set slot ~30)."""
    return 200 + sum(len(n) + 80 for n in (*found.registered, *found.defined))


def _remember(source: str, key: tuple[int, int, int], found: Scanned) -> None:
    """Cache a scan, oldest entries out first, within 256 files and CACHE_BYTES: the
    cache lives as long as the launcher, and a file a sandbox planted (a class with a
    long name and 4,000 methods) is ~1.2 MB of names, 256 such ~300 MB kept after
    the runs that planted them (found by an attack probe, tests/test_scan_cache.py)."""
    global _cached_bytes
    cost = _cost(found)
    if cost > CACHE_BYTES:
        return
    with _lock:
        if not _SCANNED:
            _cached_bytes = 0     # (tests clear the cache by hand)
        old = _SCANNED.pop(source, None)
        if old is not None:
            _cached_bytes -= _cost(old[1])
        while _SCANNED and (len(_SCANNED) >= 256 or _cached_bytes + cost > CACHE_BYTES):
            _gone, (_k, dropped) = next(iter(_SCANNED.items()))
            del _SCANNED[_gone]
            _cached_bytes -= _cost(dropped)
        _SCANNED[source] = (key, found)
        _cached_bytes += cost


class WorkerAllowance:
    """The workers the checks of one run's nested requests may start, together: each
    check is bounded, but a run may send 256 requests, each naming 8 fresh modules
    and then a function none defines (refused after the scans: no sandbox starts, the
    child pays nothing): 2,048 workers, ~60 s of the launcher's CPU. Shared by the
    requests' threads (sandbox.nested.NestedService holds one per run)."""

    def __init__(self, workers: int = MAX_WORKERS_PER_RUN) -> None:
        self.left = workers
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class _Budget:
    """The source bytes one check may have parsed, and the worker interpreters it may
    start: a workflow listing 40 uploaded modules of 512 KiB each took 24 s of the
    server's CPU before its run was refused, and one listing 672 small modules of
    the standard library (they fit the byte budget) started 672 workers, ~30 s of
    the launcher's host for one nested request (found by an attack probe). Past
    either budget a module is left unread, which makes the check refuse nothing
    (the child finds an unknown action itself, inside its limits). Each module is
    looked up once per check (`find`), however often the workflow names it."""

    def __init__(self, path: Sequence[str] = (),
                 shared: WorkerAllowance | None = None) -> None:
        self.left = MAX_SCANNED
        self.workers = MAX_WORKERS
        self.shared = shared
        self.path = path
        self._found: dict[str, str | None | object] = {}

    def find(self, module: str) -> str | None | object:
        if module not in self._found:
            self._found[module] = find_source(module, self.path)
        return self._found[module]

    def start_worker(self) -> bool:
        """Whether one more worker may run (once refused, none does)."""
        if self.workers <= 0 or (self.shared is not None and not self.shared.take()):
            self.workers = 0
            return False
        self.workers -= 1
        return True


    def take(self, size: int) -> bool:
        """Whether `size` more bytes may be parsed (once refused, nothing more is)."""
        if size > self.left:
            self.left = 0
            return False
        self.left -= size
        return True

    def scan(self, src: Any) -> Scanned:
        return _NOT_READ if src is _UNREADABLE else _scan(str(src), self)


def _run_worker(source: str) -> Scanned:
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", WORKER, source],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=WORKER_WALL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return _NOT_READ
    if proc.returncode != 0 or len(proc.stdout) > WORKER_OUTPUT:
        return _NOT_READ
    try:
        out = json.loads(proc.stdout)
        reg, dfn = out["registered"], out["defined"]
    except (ValueError, KeyError, TypeError):
        return _NOT_READ
    if not all(isinstance(n, str) for n in [*reg, *dfn]):
        return _NOT_READ
    return Scanned(frozenset(reg), frozenset(dfn))


def _check_module_name(module: str, at: str) -> None:
    """A dotted identifier, as `import` takes it: anything else (a part with '/',
    '..' or empty) would turn the lookup into a path of the requester's choosing."""
    parts = module.split(".")
    if len(module) > MAX_MODULE_NAME or not all(
            p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        raise WorkflowError(f"{at}: module name {module[:80]!r} is not a dotted Python "
                            "identifier (e.g. 'pkg.actions')")


def check_actions(workflow: Workflow, code_paths: Iterable[str] = (), *,
                  registry: Registry | None = None, where: str = "<workflow>",
                  allowance: WorkerAllowance | None = None) -> None:
    """Raise WorkflowError for an action name that provably does not exist.
    `allowance`: the workers this check shares with others (a nested request's)."""
    registry = registry or default_registry
    path = [os.path.abspath(p) for p in code_paths] + list(child_base_path())
    registered: set[str] = set(registry.names())
    complete = True
    budget = _Budget(path, allowance)
    for i, module in enumerate(workflow.imports):
        _check_module_name(module, f"{where}: imports[{i}]")
        src = budget.find(module)
        if src is None:
            raise WorkflowError(f"{where}: imports: module {module!r} not found on the "
                                f"child's path (code paths: {', '.join(code_paths) or 'none'})")
        scanned = budget.scan(src)
        if not scanned.readable:
            complete = False
            continue
        registered |= scanned.registered
    for si, stage in enumerate(workflow.stages):
        for ai, ref in enumerate(stage.actions):
            at = f"{where}: stages[{si}].actions[{ai}]"
            if ":" in ref.name:
                module, _, attr = ref.name.partition(":")
                _check_module_name(module, at)
                src = budget.find(module)
                if src is None:
                    raise WorkflowError(f"{at}: action {ref.name!r}: module {module!r} not "
                                        "found on the child's path")
                scanned = budget.scan(src)
                if scanned.readable and attr not in scanned.defined:
                    raise WorkflowError(f"{at}: action {ref.name!r}: module {module!r} "
                                        f"defines no {attr!r}")
            elif ref.name not in registered and complete:
                known = ", ".join(sorted(registered)) or "none"
                raise WorkflowError(f"{at}: unknown action {ref.name!r} (known: {known}; "
                                    "register it with @action in a module listed under "
                                    "\"imports\", or use 'module:function')")
