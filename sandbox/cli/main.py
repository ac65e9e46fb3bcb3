"""`sandbox` entry point.

Every subcommand module exposes `register(subparsers)` and imports its heavy
dependencies inside its handler, so `sandbox exec` pays only for what it uses.
An `InputError` (bad policy, workflow or argument) prints one line on stderr
and exits 2; nothing runs.
"""
from __future__ import annotations

import argparse
import os
import sys

from sandbox.cli.plugins import optional_module
from sandbox.errors import InputError

# Order is the order shown by --help.
COMMANDS = ("exec", "run", "policy", "audit", "doctor", "demo", "bench")

DESCRIPTION = """\
Run untrusted programs and workflow actions under Linux isolation: namespaces,
a private filesystem view, Landlock, seccomp, resource limits and cgroups, all
compiled from one TOML policy, with every file access audited from outside.

examples:
  sandbox exec -- /bin/echo hi                  run a program with the default policy
  sandbox exec --policy strict -- python3 -c 'print(1)'
  sandbox run docs/examples/hello.json --json   run a workflow, print the RunResult
  sandbox policy explain strict read /etc/shadow
  sandbox doctor                                what this machine can enforce
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandbox", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = optional_module(f"sandbox.cli.{name}_cmd")
        if module is not None:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"sandbox: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sandbox audit list | head`: the reader left; not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
