"""Load policy files: TOML -> validated, merged `Policy` (variables unresolved).

Strictness is the point: an unknown key, a wrong type, a bad size, a relative
path, an unknown syscall or `extends` target is an error naming the file, the
key path and (found by scanning the text, see `locate`) the line. A typo such
as `[limit]` or `memroy = "1G"` must never load as a policy without that limit.
All errors of one file are collected; the first is raised with the full list
in its `errors` attribute (the CLI prints them all).

`extends` composes policies: the listed policies are merged in order, then
the file itself on top. Scalars: later wins. Lists (filesystem.*,
syscalls.allow/deny, env.keep): union, order kept, so a `deny` of a parent is
never lost. `env.set`: merged, later wins. `name`, `description` and `extends`
are the file's own. A syscall denied anywhere in the chain is removed from
`allow` (deny wins).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

from sandbox.current_dir import current_dir
from sandbox.errors import PolicyError
from sandbox.policy import units
from sandbox.policy.locate import Locator
from sandbox.policy.model import (MONITOR_CPU, default_tmp_size, memory_floor_problem, AuditPolicy, EnvPolicy, FilesystemPolicy, Limits, NetworkPolicy,
                                  Policy, SyscallPolicy)
from sandbox.policy.sources import SourceFile, Sources, refresh
from sandbox.policy.search import default_search_path, available_policies, find_policy, is_name
from sandbox.policy.spec import TABLES, TOP, UNLIMITED, Kind
from sandbox.policy.variables import check_path_syntax

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")

Raw = dict[str, Any]


class _Checker:
    """Validates one file's TOML dict into a normalised dict of the keys present."""

    def __init__(self, file: str, text: str) -> None:
        self.file, self.locator = file, Locator(text)
        self.errors: list[PolicyError] = []

    def err(self, key: str, message: str, value: object = None) -> None:
        self.errors.append(PolicyError(message, file=self.file, key=key,
                                       line=self.locator.line_of(key, value)))

    def check(self, data: Raw) -> Raw:
        out: Raw = {}
        for key, value in data.items():
            if key in TOP:
                v = self.value(key, TOP[key], value)
                if v is not None:
                    out[key] = v
            elif key in TABLES:
                if not isinstance(value, dict):
                    self.err(key, f"must be a table ([{key}]), got {_tname(value)}")
                    continue
                table: Raw = {}
                for sub, subval in value.items():
                    kind = TABLES[key].get(sub)
                    if kind is None:
                        self.err(f"{key}.{sub}", "unknown key (known: " + ", ".join(TABLES[key]) + ")")
                        continue
                    v = self.value(f"{key}.{sub}", kind, subval)
                    if v is not None and key == "filesystem" and sub in ("read", "write", "exec"):
                        for item in v:
                            problem = _sandbox_area_problem(item)
                            if problem:
                                self.err(f"{key}.{sub}", f"{item!r}: {problem}", item)
                    if v is not None:
                        table[sub] = v
                out[key] = table
            else:
                self.err(key, "unknown key (known: " + ", ".join([*TOP, *TABLES]) + ")")
        sc = out.get("syscalls", {})
        for both in [n for n in sc.get("allow", ()) if n in sc.get("deny", ())]:
            self.err("syscalls.allow", f"{both!r} is in both allow and deny", both)
        return out

    def value(self, key: str, kind: Kind, value: object) -> Any:
        """The normalised value, or None after recording an error."""
        k = kind.name
        if k == "string":
            if isinstance(value, str):
                return value
            return self.err(key, f"must be a string, got {_tname(value)}")
        if k == "bool":
            if isinstance(value, bool):
                return value
            return self.err(key, f"must be true or false, got {_tname(value)}")
        if k == "enum":
            if isinstance(value, str) and value in kind.choices:
                return value
            return self.err(key, f"must be one of {', '.join(kind.choices)}; got {value!r}")
        if k == "count":
            try:
                return _count(value)
            except ValueError as exc:
                return self.err(key, str(exc))
        if k in ("limit_size", "limit_duration", "limit_count", "size"):
            if value == UNLIMITED and k.startswith("limit_"):
                return UNLIMITED
            try:
                if k in ("size", "limit_size"):
                    size = units.parse_size(value)
                    problem = memory_floor_problem(size) if key == "limits.memory" else None
                    if problem:
                        raise ValueError(problem)
                    return size
                if k == "limit_duration":
                    return units.parse_duration(value)
                return _count(value)
            except ValueError as exc:
                self.err(key, str(exc))
                return None
        if k == "env_table":
            if not isinstance(value, dict):
                self.err(key, f"must be a table of strings, got {_tname(value)}")
                return None
            ok = True
            for name, v in value.items():
                if not _ENV_NAME.match(name):
                    self.err(f"{key}.{name}", "not a valid environment variable name")
                    ok = False
                elif not isinstance(v, str):
                    self.err(f"{key}.{name}", f"must be a string, got {_tname(v)}")
                    ok = False
            return dict(value) if ok else None
        # the list kinds
        if isinstance(value, str):   # the commonest slip: one value without brackets
            return self.err(key, f"must be an array of strings: write "
                                 f"{key.rsplit('.', 1)[-1]} = [{json.dumps(value)}]")
        if not isinstance(value, list):
            return self.err(key, f"must be an array of strings, got {_tname(value)}")
        out: dict[str, None] = {}   # ordered and linear: a list's `in` made a nested
        for item in value:          # spawn's 1 MiB request cost the launcher minutes
            if not isinstance(item, str):
                self.err(key, f"every element must be a string, got {_tname(item)}", item)
                continue
            problem = self.element_problem(k, item)
            if problem:
                self.err(key, f"{item!r}: {problem}", item)
            else:
                out[item] = None
        return list(out)

    @staticmethod
    def element_problem(kind: str, item: str) -> str | None:
        if kind == "path_list":
            return check_path_syntax(item)
        if kind == "syscall_list":
            from sandbox.isolation.syscall_names import is_known_syscall
            return None if is_known_syscall(item) else "unknown syscall on this machine"
        if kind == "credential_list":
            from sandbox.policy.credentials import check_names
            return check_names([item])
        if kind == "envname_list":
            return None if _ENV_NAME.match(item) else "not a valid environment variable name"
        if kind == "net_allow_list":
            from sandbox.netproxy.rules import RuleError, parse_rule
            try:
                parse_rule(item)
            except RuleError as exc:
                return str(exc).split(": ", 1)[-1] if str(exc).startswith(repr(item)) else str(exc)
            return None
        if kind == "name_list":
            return None if item.strip() else "empty policy reference"
        return None


def _sandbox_area_problem(path: str) -> str | None:
    """Allow rules cannot name what the sandbox itself provides (it would not mean the host's)."""
    p = os.path.normpath(path)
    p = "/" + p.lstrip("/") if p.startswith("//") else p
    if p == "/proc" or p.startswith("/proc/"):
        return "the sandbox has its own /proc (readable); host /proc paths cannot be granted"
    if p == "/tmp":
        return ("/tmp is the sandbox's private /tmp (always readable and writable, empty at start); "
                "the host's /tmp cannot be granted as a whole")
    if p == "/dev":
        return ("the sandbox has its own minimal /dev; grant single host devices "
                "(e.g. /dev/dri) instead of the whole host /dev")
    return None


def _scratch_conflict(raw: Raw) -> tuple[str, str, str] | None:
    """(key, value, why) of what contradicts `filesystem.scratch_exec = true`, if anything."""
    from sandbox.policy import globs
    if not raw.get("filesystem", {}).get("scratch_exec", False):
        return None
    for pat in raw.get("filesystem", {}).get("deny", ()):
        if "${" in pat:
            continue
        hit = globs.compile_rule(pat).fullmatch if globs.is_glob(pat) else None
        norm = os.path.normpath(pat)
        covers = (hit("/tmp") or hit("/tmp/\x01probe")) if hit else \
            norm in ("/", "/tmp") or norm == "//"
        if covers:
            return ("filesystem.deny", pat, f"it denies the private /tmp ({pat!r}), "
                    "so nothing there could be executed")
    if "execve" in raw.get("syscalls", {}).get("deny", ()):
        return ("syscalls.deny", "execve", "syscalls.deny has 'execve', so no program "
                "can be executed anywhere")
    return None


def _check_scratch_exec(merged: Raw, own: Raw, checker: _Checker) -> None:
    """A policy that asks for an executable scratch area and forbids it elsewhere is
    refused, located at the key of this file that makes the contradiction."""
    conflict = _scratch_conflict(merged)
    if conflict is None:
        return
    key, value, why = conflict
    table, sub = key.split(".")
    if sub in own.get(table, {}) and value in own[table][sub]:
        where, at = key, value
    else:
        where, at = "filesystem.scratch_exec", None
    raise PolicyError(f"filesystem.scratch_exec = true contradicts {key}: {why}; "
                      f"drop one of the two", file=checker.file, key=where,
                      line=checker.locator.line_of(where, at))


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a positive integer, got {_tname(value)}")
    return units.parse_count(value)


def _tname(value: object) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _merge(base: Raw, over: Raw) -> Raw:
    """`over` on top of `base` (both normalised dicts), by each key's merge rule."""
    out: Raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()
                if TOP.get(k, Kind("")).merge != "own"}
    for key, value in over.items():
        if key in TOP:
            out[key] = value
            continue
        table = out.setdefault(key, {})
        for sub, v in value.items():
            merge = TABLES[key][sub].merge
            if merge == "union" and sub in table:
                table[sub] = list(dict.fromkeys([*table[sub], *v]))
            elif merge == "table" and sub in table:
                table[sub] = {**table[sub], **v}
            else:
                table[sub] = v
    return out


class _Loader:
    def __init__(self, search_path: list[str] | None, *, names_only: bool = False) -> None:
        self.search_path = search_path
        # Untrusted policies (a nested spawn's, later a remote caller's) may extend
        # built-in or registered policies by name only, never a file they chose.
        self.names_only = names_only
        self.chain: list[str] = []          # real paths being loaded (cycle detection)
        self.sources: list[SourceFile] = []  # every file read, with its content's hash

    def locate_ref(self, ref: str, base_dir: str | None, requester: str | None,
                   file: str, key_line: int | None) -> str:
        if is_name(ref):
            found = find_policy(ref, self.search_path, skip=requester)
            if found is None:
                known = ", ".join(sorted(available_policies(self.search_path))) or "none"
                raise PolicyError(f"unknown policy {ref!r} (on the search path: {known})",
                                  file=file, key="extends", line=key_line)
            return found
        if self.names_only and requester is None:   # the untrusted data itself, not a file
            raise PolicyError(f"{ref!r}: this policy may extend built-in or registered policies "
                              "by name only, not a file", file=file, key="extends", line=key_line)
        path = os.path.expanduser(ref)
        if not os.path.isabs(path):
            path = os.path.join(base_dir or current_dir(), path)
        if not os.path.isfile(path):
            raise PolicyError(f"policy file {ref!r} not found ({path})", file=file, key="extends",
                              line=key_line)
        return path

    def load_file(self, path: str) -> Raw:
        real = os.path.realpath(path)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
                self.sources.append(SourceFile.of_bytes(real, data, st))
                text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy: {exc}", file=path) from None
        return self.load_text(text, path, os.path.dirname(os.path.abspath(path)), real)

    def load_text(self, text: str, file: str, base_dir: str | None, real: str | None) -> Raw:
        # imported here: tomllib (with datetime, ~2.5 ms) is not the monitor's, which
        # takes every policy already parsed, and its imports start every cold run
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = _TOML_POS.search(str(exc))
            msg = _TOML_POS.sub("", str(exc)).strip()
            raise PolicyError(f"invalid TOML: {msg}", file=file,
                              line=int(m.group(1)) if m else None) from None
        return self.load_data(data, text, file, base_dir, real)

    def load_data(self, data: Raw, text: str, file: str, base_dir: str | None,
                  real: str | None) -> Raw:
        checker = _Checker(file, text)
        own = checker.check(data)
        if checker.errors:
            first = checker.errors[0]
            first.errors = checker.errors          # type: ignore[attr-defined]
            raise first
        merged: Raw = {}
        if real is not None:
            self.chain.append(real)
        try:
            for ref in own.get("extends", ()):
                line = checker.locator.line_of("extends", ref)
                target = self.locate_ref(ref, base_dir, real, file, line)
                treal = os.path.realpath(target)
                if treal in self.chain:
                    cycle = " -> ".join(os.path.basename(p)
                                        for p in [*self.chain[self.chain.index(treal):], treal])
                    raise PolicyError(f"extends cycle: {cycle}", file=file, key="extends", line=line)
                merged = _merge(merged, self.load_file(target))
        finally:
            if real is not None:
                self.chain.pop()
        merged = _merge(merged, own)
        _check_scratch_exec(merged, own, checker)
        net = merged.get("network", {})
        for key in ("allow", "dns", "deny_private"):
            if key in own.get("network", {}) and net.get("mode", "none") != "allowlist" \
                    and own["network"][key] not in ([], False, True if key == "deny_private" else None):
                raise PolicyError(f'applies only to mode = "allowlist" (this policy\'s '
                                  f'mode is {net.get("mode", "none")!r}); set mode = "allowlist" or '
                                  f'drop network.{key}', file=checker.file, key=f"network.{key}",
                                  line=checker.locator.line_of(f"network.{key}"))
        if own.get("filesystem", {}).get("workdir") == "copy-on-write" and \
                "${WORKDIR}" in merged.get("filesystem", {}).get("write", ()):
            raise PolicyError('filesystem.workdir = "copy-on-write" contradicts filesystem.write '
                              '"${WORKDIR}" (the host\'s work directory written directly); drop '
                              'one of the two', file=checker.file, key="filesystem.workdir",
                              line=checker.locator.line_of("filesystem.workdir"))
        return merged


def _build(raw: Raw, file: str) -> Policy:
    """A Policy from a merged, normalised dict."""
    def lim(table: str, key: str) -> Any:
        v = raw.get(table, {}).get(key, MONITOR_CPU if key == "monitor_cpu" else None)
        return None if v == UNLIMITED else v

    fs, sc, env = raw.get("filesystem", {}), raw.get("syscalls", {}), raw.get("env", {})
    deny_sc = tuple(sc.get("deny", ()))
    default_fs = FilesystemPolicy()
    default_name = os.path.splitext(os.path.basename(file))[0] if not file.startswith("<") else "unnamed"
    return Policy(
        name=raw.get("name", default_name),
        description=raw.get("description", ""),
        best_effort=raw.get("best_effort", False),
        filesystem=FilesystemPolicy(read=tuple(fs.get("read", ())), write=tuple(fs.get("write", ())),
                                    exec=tuple(fs.get("exec", ())), deny=tuple(fs.get("deny", ())),
                                    tmp_size=fs.get("tmp_size") or default_tmp_size(
                                        lim("limits", "memory")),
                                    scratch_exec=fs.get("scratch_exec", False),
                                    workdir=fs.get("workdir", "direct"),
                                    allow_credentials=tuple(fs.get("allow_credentials", ())),
                                    output_size=fs.get("output_size", default_fs.output_size),
                                    output_inodes=fs.get("output_inodes",
                                                         default_fs.output_inodes)),
        network=NetworkPolicy(**raw.get("network", {})),
        limits=Limits(**{k: lim("limits", k) for k in TABLES["limits"]}),
        syscalls=SyscallPolicy(profile=sc.get("profile", "default"),
                               allow=tuple(n for n in sc.get("allow", ()) if n not in deny_sc),
                               deny=deny_sc, on_violation=sc.get("on_violation", "errno")),
        audit=AuditPolicy(**raw.get("audit", {})),
        env=EnvPolicy(keep=tuple(env.get("keep", ())), set=dict(env.get("set", {}))),
        source=file,
        extends=tuple(raw.get("extends", ())),
    )


def parse_policy(text: str, *, file: str = "<string>", base_dir: str | None = None,
                 search_path: list[str] | None = None) -> Policy:
    """A Policy from TOML text. `base_dir` anchors relative `extends` paths (default: cwd)."""
    loader = _Loader(search_path)
    return _build(loader.load_text(text, file, base_dir, None), file)


def parse_policy_data(data: object, *, file: str = "<policy data>") -> Policy:
    """A Policy from untrusted data shaped like a parsed policy file (a nested
    spawn's request): the same checks as a file, and `extends` may name only
    built-in or registered policies (the default search path), never a path."""
    if not isinstance(data, dict):
        raise PolicyError(f"must be a table (a dict), got {_tname(data)}", file=file)
    loader = _Loader(None, names_only=True)
    return _build(loader.load_data(data, "", file, None, None), file)


# name or real path, search path -> the policy and what it was read from (valid while
# `sources.refresh` finds every file saying the same thing and no search directory changed)
_CACHE: dict[tuple[str, tuple[str, ...] | None], tuple[Policy, Sources]] = {}


def load_policy_cached(name_or_path: str, *, search_path: list[str] | None = None) -> Policy:
    """`load_policy`, memoised while every file it read (and the search path's
    directories) is unchanged: a launcher loads the same policy for every run."""
    return load_policy_sourced(name_or_path, search_path=search_path)[0]


def load_policy_sourced(name_or_path: str, *, search_path: list[str] | None = None
                        ) -> tuple[Policy, Sources]:
    """`load_policy_cached`, and the files it read (its own, each `extends` target)
    with the hashes of the bytes parsed, plus the search path's directories: what a
    warm pool prepared for this policy depends on (sandbox.policy.sources,
    sandbox.monitor.pools)."""
    key_path = name_or_path if is_name(name_or_path) else os.path.realpath(
        os.path.expanduser(name_or_path))
    key = (key_path, tuple(search_path) if search_path is not None else None)
    hit = _CACHE.get(key)
    if hit is not None:
        fresh = refresh(hit[1])
        if fresh is not None:
            _CACHE[key] = (hit[0], fresh)
            return hit[0], fresh
    loader = _Loader(search_path)
    policy = _load(loader, name_or_path, search_path)
    dirs = search_path if search_path is not None else default_search_path()
    sources = (*loader.sources, *(SourceFile.of_dir(d) for d in dirs))
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (policy, sources)
    return policy, sources


def load_policy(name_or_path: str, *, search_path: list[str] | None = None) -> Policy:
    """A Policy from a built-in/user policy name (`strict`) or a file path.

    Names have no `/` and no `.toml`; they are looked up on the search path
    (see `sandbox.policy.search`). Variables stay unresolved: call
    `sandbox.policy.resolve` for a run.
    """
    return _load(_Loader(search_path), name_or_path, search_path)


def _load(loader: "_Loader", name_or_path: str, search_path: list[str] | None) -> Policy:
    if is_name(name_or_path):
        path = find_policy(name_or_path, search_path)
        if path is None:
            known = ", ".join(sorted(available_policies(search_path))) or "none"
            raise PolicyError(f"unknown policy {name_or_path!r}: not a file path and not on the "
                              f"search path (known: {known})")
    else:
        path = os.path.expanduser(name_or_path)
        if os.path.isdir(path):
            raise PolicyError(f"{name_or_path}: is a directory, not a policy file")
        if not os.path.isfile(path):
            raise PolicyError(f"policy file not found: {name_or_path}")
    return _build(loader.load_file(path), path)
