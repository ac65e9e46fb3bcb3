"""Learned policies: the least policy that grants what one audited run used.

Input: the run's records (run it with ``[audit] files = "all"`` under a policy
permissive enough for it to succeed). Only *allowed* accesses count: a denied
one did not happen, and a path denied by a ``filesystem.deny`` rule is never
suggested. The rules, in order:

1. What the sandbox provides itself (private /tmp, its /proc and /dev: the
   record's rule says so; a host path bound inside /tmp is a real rule) and
   metadata-only lookups
   (stat, access, readlink: the parents of granted paths are visible anyway)
   are dropped.
2. What the ``base`` policy (resolved with the run's variables) already
   allows is dropped, and then the policy says ``extends = ["base"]``.
3. exec -> an exec rule on the file; read -> read; write -> write on the file;
   create/delete -> write on the parent directory (that is where the kernel
   checks them).
4. Collapsing: a directory replaces the entries under it when at least
   `min_files` (default 3) distinct used entries lie under it, deepest
   directory first, and never for a top-level or system directory
   (`PROTECTED`, or depth < 2): reading three files of /usr/lib/x gives
   /usr/lib/x, never /usr/lib or /usr.
5. The run's ${WORKDIR} and ${OUTPUT} (and ${PYTHON}'s paths) are substituted
   back where a rule lies under them.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable

PROTECTED = frozenset({
    "/", "/usr", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/share", "/usr/bin", "/usr/sbin",
    "/usr/local", "/usr/local/lib", "/usr/local/bin", "/usr/include", "/usr/libexec",
    "/etc", "/var", "/var/lib", "/var/cache", "/var/log", "/home", "/root", "/opt", "/srv",
    "/mnt", "/media", "/run", "/sys", "/boot", "/lib", "/lib64", "/lib32", "/bin", "/sbin",
    "/tmp", "/proc", "/dev",
})
_SANDBOX_AREAS = ("/proc", "/dev", "/tmp")
KINDS = ("read", "exec", "write")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or prefix == "/" or path.startswith(prefix.rstrip("/") + "/")


def _protected(d: str, variables: dict[str, str]) -> bool:
    if d in PROTECTED or d.count("/") < 2:
        return True
    # never collapse above a variable's root (e.g. the parent of ${OUTPUT})
    return any(_under(v, d) and v != d for v in variables.values())


def collapse(paths: Iterable[str], min_files: int, variables: dict[str, str]) -> list[str]:
    """Deepest-first directory collapsing (see module doc, rule 4)."""
    entries = set(paths)
    # drop entries already under another entry
    entries = {p for p in entries if not any(q != p and _under(p, q) for q in entries)}
    candidates = set()
    for p in entries:
        d = os.path.dirname(p)
        while d and d != "/":
            candidates.add(d)
            d = os.path.dirname(d)
    for d in sorted(candidates, key=lambda x: (-x.count("/"), x)):
        if _protected(d, variables):
            continue
        inside = {p for p in entries if p != d and _under(p, d)}
        if len(inside) >= min_files:
            entries = (entries - inside) | {d}
    return sorted(entries)


def _provided(rule: str, path: str) -> bool:
    """Granted by the sandbox itself (private /tmp, its /proc and /dev), not by a rule."""
    if rule.startswith(("private ", "sandbox:")):
        return True
    return not rule and any(_under(path, a) for a in _SANDBOX_AREAS)


def needed(records: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """kind -> paths, from allowed records (rules 1 and 3)."""
    out: dict[str, set[str]] = {k: set() for k in KINDS}
    for r in records:
        if r["verdict"] != "allowed":
            continue
        op, path = r["operation"], r["path"]
        if not path.startswith("/") or _provided(r.get("rule", ""), path):
            continue
        if op == "metadata":
            continue
        if op in ("read", "exec"):
            out[op].add(path)
        elif op == "write":
            out["write"].add(path)
        elif op in ("create", "delete"):
            out["write"].add(os.path.dirname(path) or "/")
    # an exec rule grants read too; a write rule grants read
    out["read"] = {p for p in out["read"]
                   if not any(_under(p, q) for q in out["exec"] | out["write"])}
    return out


def suggest(records: list[dict[str, Any]], *, workdir: str | None, output: str | None,
            min_files: int = 3, name: str = "suggested") -> tuple[str, dict[str, list[str]]]:
    """(TOML text, {kind: rules}) of the least policy covering the records."""
    from sandbox.policy import default_variables, load_policy, resolve
    from sandbox.policy.engine import Engine
    variables: dict[str, str] = {}
    if workdir:
        variables["WORKDIR"] = workdir
    if output:
        variables["OUTPUT"] = output
    need = needed(records)
    base = resolve(load_policy("base"), default_variables(workdir or os.getcwd(),
                                                          output or os.getcwd()))
    eng = Engine(base)
    used_base = False
    left: dict[str, set[str]] = {}
    for kind, paths in need.items():
        op = {"read": "read", "exec": "exec", "write": "write"}[kind]
        keep = set()
        for p in paths:
            v = eng.decide(op, p)
            if v.allowed and v.rule.startswith("filesystem."):   # not base's private /tmp
                used_base = True
            else:
                keep.add(p)
        left[kind] = keep
    rules = {k: collapse(v, min_files, variables) for k, v in left.items()}
    python = [p for p in _python_paths() if p not in ("/usr", "/usr/bin")]
    subst = sorted(variables.items(), key=lambda kv: -len(kv[1]))

    def put_vars(path: str) -> str:
        for var, val in subst:
            if _under(path, val):
                return "${" + var + "}" + path[len(val.rstrip("/")):]
        return path

    out: dict[str, list[str]] = {}
    for kind in KINDS:
        items = []
        for p in rules[kind]:
            if any(_under(p, q) for q in python) and kind in ("read", "exec"):
                items.append("${PYTHON}")
                continue
            items.append(put_vars(p))
        out[kind] = sorted(dict.fromkeys(items))
    lines = [f"# Learned from an audited run by `sandbox policy suggest`: the least set of",
             f"# rules that grants what the run used (see docs/audit.md).",
             f"name = {json.dumps(name)}",
             f"description = {json.dumps('Suggested from an audited run.')}"]
    if used_base:
        lines.append('extends = ["base"]')
    lines.append("")
    lines.append("[filesystem]")
    for kind in KINDS:
        vals = out[kind]
        if not vals:
            continue
        body = "".join(f"    {json.dumps(v)},\n" for v in vals)
        lines.append(f"{kind} = [\n{body}]")
    lines += ["", "[network]", 'mode = "none"', ""]
    return "\n".join(lines), out


def _python_paths() -> list[str]:
    from sandbox.policy.variables import python_paths
    return python_paths()


def suggest_for_run(run_id: str, *, db: str | None = None, min_files: int = 3
                    ) -> tuple[str, dict[str, list[str]]]:
    from sandbox.audit import store
    conn = store.connect(db, create=False)
    try:
        rid = store.find_run(conn, run_id)
        info = store.run_info(conn, rid) or {}
        paths = json.loads(info.get("paths") or "{}")
        recs = list(store.records(conn, rid))
    finally:
        conn.close()
    if info.get("files") != "all":
        from sandbox.errors import InputError
        raise InputError(f"run {rid} was audited with files = {info.get('files')!r}: only "
                         "denied accesses were recorded; rerun with [audit] files = \"all\"")
    return suggest(recs, workdir=paths.get("workdir"), output=paths.get("output"),
                   min_files=min_files, name=f"suggested-{rid[:8]}")
