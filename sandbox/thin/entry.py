"""The `sandbox` command's entry point: `sandbox exec` goes to the daemon when one of
ours runs (sandbox.thin.client), everything else (and exec without a daemon) to the
full CLI. Imports nothing of the CLI on the thin path. `run` is the console script and
``python -m sandbox``: `main` and then the interpreter's end without its last garbage
collections (sandbox.process_end)."""
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


def run() -> int:
    """The process's entry: `main`, then `process_end.ending` (the CLI's finalization
    without its collections: ~10 ms of every command)."""
    code = main()
    from sandbox.process_end import die_by, ending
    common = sys.modules.get("sandbox.cli.common")   # the full CLI ran (never imported here)
    sig = getattr(common, "CLI_DIE_BY", None)
    if sig:
        from sandbox.launcher import tidy
        tidy.drain()   # the run's directories, which atexit would have removed
        code = die_by(sig)
    return ending(code)
