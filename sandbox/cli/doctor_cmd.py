"""`sandbox doctor [--json]`: what this machine can enforce; exit 0 when the
default policy can be enforced here, 1 when it cannot."""
from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor", help="what this machine can enforce",
        description="Try each kernel feature the sandbox uses (user namespaces, seccomp, "
                    "seccomp notification, Landlock, cgroups, no_new_privs) and say whether "
                    "the default policy can be enforced here. Exit 0 if it can, 1 if not.")
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import json

    from sandbox import doctor
    facts = doctor.collect()
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
    else:
        print(doctor.render(facts))
    return 0 if facts["enforceable"] else 1
