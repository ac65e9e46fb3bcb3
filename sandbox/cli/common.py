"""Options and helpers shared by `sandbox exec` and `sandbox run`."""
from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Any

from sandbox.errors import InputError

EXIT_TIMEOUT = 124      # as timeout(1)
EXIT_SETUP = 125        # the sandbox could not be set up; nothing ran
EXIT_INPUT = 2


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", metavar="NAME|FILE",
                   help="policy name on the search path (strict, default, ...) or a .toml file "
                        "(default: the workflow's own, else 'default')")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wall-clock limit; can only shorten the policy's [limits] wall")
    p.add_argument("--result", metavar="FILE", help="write the RunResult as JSON to FILE")
    p.add_argument("--output", metavar="DIR",
                   help="the run's output directory, ${OUTPUT} in the policy "
                        "(default: $SANDBOX_HOME/runs/RUN_ID/output)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="set a variable in the sandbox (repeatable); nothing else of "
                        "the caller's environment passes unless the policy keeps it")
    p.add_argument("--audit-log", metavar="FILE",
                   help="also write this run's file-access audit records as JSON Lines")


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--env {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def write_result(path: str | None, result: Any) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(result.to_dict(), f, indent=2)
            f.write("\n")


def write_audit_log(path: str | None, result: Any) -> None:
    if not path:
        return
    from sandbox.audit import export_jsonl
    export_jsonl(result.run_id, path)


def exit_code_for(result: Any) -> int:
    """The child's exit code; 128+N for signal N; 124 timeout; 125 setup error."""
    if result.status == "setup_error":
        return EXIT_SETUP
    if result.status == "timeout":
        return EXIT_TIMEOUT
    if result.signal is not None:
        return 128 + result.signal
    if result.exit_code is not None:
        return result.exit_code
    return 1


def describe_failure(result: Any) -> str:
    return f"sandbox: {result.status}: {result.reason}" if result.reason else \
        f"sandbox: {result.status}"


def policy_path_hint(value: str | None) -> str | None:
    if value and os.sep in value and not os.path.exists(value):
        raise InputError(f"{value}: policy file not found")
    return value


def signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return str(n)
