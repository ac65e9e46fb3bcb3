"""`sandbox demo [NAME]`: the GoStage spawn examples, sandboxed and self-verifying."""
from __future__ import annotations

import argparse
import importlib

DEMOS = {"spawn_process": "sandbox.demos.spawn_process",
         "spawn_middleware": "sandbox.demos.spawn_middleware"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a self-verifying demo (default: spawn_process)",
                       description="Run a demo workflow in a sandbox and verify what came back. "
                                   "Exit code 0 when every check passed.")
    p.add_argument("name", nargs="?", default="spawn_process", choices=sorted(DEMOS))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(DEMOS[args.name])
    return 0 if module.run_demo() else 1
