"""`sandbox policy list`: the names `--policy` takes, with their descriptions and files.

A new user's first question ("which policies are there?") was an argparse error;
the names were only in the error of an unknown one. A policy that does not load
is listed with its error: one bad file of SANDBOX_POLICY_PATH does not hide the
others.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from sandbox.errors import PolicyError


def register(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("list", help="the policies --policy can name, with their descriptions",
                           description="Every policy on the search path ($SANDBOX_POLICY_PATH, "
                                       "then the user's and the built-in directories; the first "
                                       "file of a name wins): its name, description and file.")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=list_policies)


def _entries() -> list[dict[str, Any]]:
    from sandbox.policy import available_policies, load_policy
    out: list[dict[str, Any]] = []
    for name, path in sorted(available_policies().items()):
        entry: dict[str, Any] = {"name": name, "file": path, "description": "", "error": None}
        try:
            entry["description"] = load_policy(name).description
        except (PolicyError, OSError, ValueError) as exc:
            entry["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        out.append(entry)
    return out


def list_policies(args: argparse.Namespace) -> int:
    from sandbox.printable import printable
    entries = _entries()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    width = max((len(e["name"]) for e in entries), default=0)
    for e in entries:
        text = e["description"] or "(no description)"
        if e["error"]:
            text = f"(does not load: {e['error']})"
        print(f"{printable(e['name']):<{width}}  {printable(text)}  [{printable(e['file'])}]")
    return 0
