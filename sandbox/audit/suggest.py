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
2. What the learning policy's ``extends`` (``base`` when it had none, or
   when the run's policy is not known) already allows is dropped, and the
   learned policy extends the same.
3. exec -> an exec rule on the file; read -> read; write -> write on the file;
   create/delete -> write on the parent directory (that is where the kernel
   checks them).
4. Collapsing: a directory replaces the entries under it when at least
   `min_files` (default 3) distinct used entries lie under it, deepest
   directory first, and never for a top-level or system directory
   (`PROTECTED`, or depth < 2), nor for one holding a path the run was
   refused (a learned policy never grants what the learning one refused):
   reading three files of /usr/lib/x gives /usr/lib/x, never /usr/lib.
5. The run's ${WORKDIR} and ${OUTPUT} (and ${PYTHON}'s paths) are substituted
   back where a rule lies under them. Every other character is literal:
   the program chose these names, so glob characters in them are escaped
   (an open of ``/home/*/.ssh/id_*`` must not become a glob grant).
6. Everything else comes from the learning policy, which the monitor keeps
   with the run: its deny rules (minus what the floor already denies and the
   credential stores `resolve` adds), limits, network, syscalls, audit, env
   and tmp size. A learned policy is never looser than the one it learned
   under; it only drops grants the run did not use.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Iterator

from sandbox.current_dir import current_dir
from sandbox.printable import printable

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


def escape_glob(path: str) -> str:
    """`path` as a rule matching only itself: each glob character in a class."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def _chain(path: str) -> Iterator[str]:
    """`path` and every directory above it, "/" last (for a normalised absolute path)."""
    while True:
        yield path
        if path in ("/", ""):
            return
        path = os.path.dirname(path)


def _minimal(paths: set[str]) -> set[str]:
    """The paths not under another of them: each checked against its own ancestors,
    never against every other path (the program chose how many there are)."""
    if "/" in paths:
        return {"/"}
    return {p for p in paths if not any(a in paths for a in _chain(os.path.dirname(p)))}


def collapse(paths: Iterable[str], min_files: int, variables: dict[str, str],
             refused: Iterable[str] = ()) -> list[str]:
    """Deepest-first directory collapsing (see module doc, rule 4).

    Linear in the paths times their depth: a directory's count of entries is made
    from its children's, which were decided before it (deepest first), and a
    directory holding a refused path is found among the refused paths' ancestors.
    Before, each directory was checked against every path and every refused path,
    and a run that opened 12,000 names held the service for minutes per suggestion."""
    entries = _minimal(set(paths))
    blocked = {a for r in refused for a in _chain(r)}
    direct: dict[str, int] = {}          # directory -> entries right in it
    kids: dict[str, set[str]] = {}       # directory -> candidate directories right in it
    built: set[str] = set()
    for p in entries:
        d = os.path.dirname(p)
        direct[d] = direct.get(d, 0) + 1
        while d and d != "/" and d not in built:     # once per directory
            built.add(d)
            kids.setdefault(d, set())
            up = os.path.dirname(d)
            if up and up != "/":
                kids.setdefault(up, set()).add(d)
            d = up
    collapsed: set[str] = set()
    count: dict[str, int] = {}             # directory -> entries under it, once decided
    for d in sorted(kids, key=lambda x: (-x.count("/"), x)):
        n = direct.get(d, 0) + sum(1 if c in collapsed else count[c] for c in kids[d])
        if n >= min_files and d not in blocked and not _protected(d, variables):
            collapsed.add(d)
        count[d] = n
    out = set()
    for p in entries:
        top = [a for a in _chain(os.path.dirname(p)) if a in collapsed]
        out.add(top[-1] if top else p)
    return sorted(out)


def _provided(rule: str, path: str) -> bool:
    """Granted by the sandbox itself (private /tmp, its /proc and /dev), not by a rule."""
    if rule.startswith(("private ", "sandbox:")):
        return True
    return not rule and any(_under(path, a) for a in _SANDBOX_AREAS)


def _representable(path: str) -> bool:
    """Can a policy name exactly this path? Not with "${" (a variable), a ".."
    segment (refused), a control character or bytes that are not UTF-8 (TOML
    cannot hold them): such a path gets no rule, so it is never granted."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return ("${" not in path and ".." not in path.split("/")
            and not any(ord(c) < 32 or ord(c) == 127 for c in path))


def needed(records: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """kind -> paths, from allowed records (rules 1 and 3)."""
    out: dict[str, set[str]] = {k: set() for k in KINDS}
    for r in records:
        if r["verdict"] != "allowed":
            continue
        op, path = r["operation"], r["path"]
        if not path.startswith("/") or _provided(r.get("rule", ""), path):
            continue
        if not _representable(path):
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
    wider = out["exec"] | out["write"]
    out["read"] = {p for p in out["read"] if not any(a in wider for a in _chain(p))}
    return out


def _floor(names: tuple[str, ...], variables: dict[str, Any]) -> tuple[tuple[str, ...], Any]:
    """(extends list, resolved policy of that list): the learning policy's floor,
    else base. A relative file reference cannot be found again: then base."""
    from sandbox.errors import PolicyError
    from sandbox.policy import parse_policy, resolve
    for refs in ((names,) if names else ()) + (("base",),):
        try:
            return refs, resolve(parse_policy("extends = " + json.dumps(list(refs))), variables)
        except PolicyError:
            continue
    raise AssertionError("the built-in base policy cannot be loaded")


def suggest(records: list[dict[str, Any]], *, workdir: str | None, output: str | None,
            min_files: int = 3, name: str = "suggested",
            learning: Any = None) -> tuple[str, dict[str, list[str]]]:
    """(TOML text, {kind: rules}) of the least policy covering the records.

    `learning`: the run's (resolved) policy, whose floor, denies and every
    setting but the grants the learned policy keeps (module doc, rule 6)."""
    from sandbox.policy import default_variables
    from sandbox.policy.credentials import store_of
    from sandbox.policy.engine import Engine
    from sandbox.policy.model import Policy
    from sandbox.policy.render import to_toml
    variables: dict[str, str] = {}
    if workdir:
        variables["WORKDIR"] = workdir
    if output:
        variables["OUTPUT"] = output
    need = needed(records)
    refused = {r["path"] for r in records if r["verdict"] != "allowed"}
    learning = learning if learning is not None else Policy(extends=("base",))
    extends, floor = _floor(tuple(learning.extends),
                            default_variables(workdir or current_dir(), output or current_dir()))
    eng = Engine(floor)
    # a copy-on-write work directory took the run's writes there in its own layer: they
    # need no write rule, and one would contradict the mode (the loader refuses both);
    # they need the directory in the view, whose layer is the whole directory
    cow = learning.filesystem.workdir == "copy-on-write" and workdir
    if cow and any(_under(p, workdir or "") for p in need.get("write", ())):
        need.setdefault("read", set()).add(workdir or "")
    left: dict[str, set[str]] = {}
    for kind, paths in need.items():
        op = {"read": "read", "exec": "exec", "write": "write"}[kind]
        keep = set()
        for p in paths:
            if cow and kind == "write" and _under(p, workdir or ""):
                continue
            v = eng.decide(op, p)
            if not (v.allowed and v.rule.startswith("filesystem.")):   # not the private /tmp
                keep.add(p)
        left[kind] = keep
    rules = {k: collapse(v, min_files, variables, refused) for k, v in left.items()}
    python = [p for p in _python_paths() if p not in ("/usr", "/usr/bin")]
    subst = sorted(variables.items(), key=lambda kv: -len(kv[1]))

    def put_vars(path: str, escape: bool = True) -> str:
        for var, val in subst:
            if _under(path, val):
                rest = path[len(val.rstrip("/")):]
                return "${" + var + "}" + (escape_glob(rest) if escape else rest)
        return escape_glob(path) if escape else path

    out: dict[str, list[str]] = {}
    for kind in KINDS:
        items = []
        for p in rules[kind]:
            if any(_under(p, q) for q in python) and kind in ("read", "exec"):
                items.append("${PYTHON}")
                continue
            items.append(put_vars(p))
        out[kind] = sorted(dict.fromkeys(items))
    floor_deny = set(floor.filesystem.deny)
    deny = [put_vars(d, escape=False) for d in learning.filesystem.deny
            if d not in floor_deny and store_of(d) is None]
    from dataclasses import replace as _with
    learned = learning.replace(   # every setting but the grants as it ran (output sizes too)
        name=name, description="Suggested from an audited run.", best_effort=False,
        filesystem=_with(learning.filesystem,
                         read=tuple(out["read"]), write=tuple(out["write"]),
                         exec=tuple(out["exec"]), deny=tuple(dict.fromkeys(deny))))
    if learning.network.mode == "allowlist":   # the entries the run's connections used
        from dataclasses import replace
        from sandbox.netproxy.learn import allow_entries
        out["network"] = allow_entries(records)
        learned = learned.replace(network=replace(learning.network,
                                                  allow=tuple(out["network"])))
    body = to_toml(learned).split("\n")
    head = [line for line in body if line.startswith(("name =", "description ="))]
    lines = ["# Learned from an audited run by `sandbox policy suggest`: the least set of",
             "# rules that grants what the run used, every other setting as the policy it",
             "# ran under (see docs/audit.md).", *unreached_note(records), *head,
             "extends = " + json.dumps(list(extends)),
             *[line for line in body if line not in head]]
    text = "\n".join(lines)
    from sandbox.policy.loader import parse_policy
    parse_policy(text, file="<suggested>", base_dir=workdir or current_dir())  # loads, or says why
    return text, out


NOTE_TARGETS = 8   # the refused network targets a suggestion names


def unreached_note(records: list[dict[str, Any]]) -> list[str]:
    """Comment lines naming the connections mode = "none" refused: never granted (a
    refused access was not used, as for files), but the reason a run failed is often
    that it needed the network, and the next step is a run that learns its entries."""
    targets = list(dict.fromkeys(
        printable(str(r.get("path", ""))) for r in records
        if r.get("operation") == "connect" and r.get("verdict") != "allowed"
        and str(r.get("rule", "")).startswith("network.none")))
    if not targets:
        return []
    more = len(targets) - NOTE_TARGETS
    return ["#", "# The run tried to reach the network, which mode = \"none\" refused:",
            *[f"#   {t}" for t in targets[:NOTE_TARGETS]],
            *([f"#   ... and {more} more"] if more > 0 else []),
            "# To let it out, set [network] mode = \"allowlist\" with those it needs as",
            "# allow entries (or --net allowlist --allow HOST:PORT), run it again and learn",
            "# from that run: the allow entries it used are then suggested (docs/audit.md).",
            "#"]


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
    learning = None
    if isinstance(paths.get("policy"), dict):
        from sandbox.policy.model import Policy
        try:
            learning = Policy.from_dict(paths["policy"])
        except (TypeError, ValueError):
            learning = None
    return suggest(recs, workdir=paths.get("workdir"), output=paths.get("output"),
                   min_files=min_files, name=f"suggested-{rid[:8]}", learning=learning)
