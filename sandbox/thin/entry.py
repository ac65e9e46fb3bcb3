"""The `sandbox` command's entry point: `sandbox exec` goes to the daemon when one of
ours runs (sandbox.thin.client), everything else (and exec without a daemon) to the
full CLI. Imports nothing of the CLI on the thin path."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["exec"]:
        from sandbox.thin.client import try_exec
        code = try_exec(args)
        if code is not None:
            return code
    from sandbox.cli.main import main as full
    return full(args)
