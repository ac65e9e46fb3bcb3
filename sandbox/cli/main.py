"""`sandbox` entry point.

Every subcommand module exposes `register(subparsers)` and imports its heavy
dependencies inside its handler, so `sandbox exec` pays only for what it uses.

Bad input of any kind (an unknown option, a bad value, a bad policy, workflow
or path) prints ONE line on stderr and exits 125 for `exec` and `run` (so a
script can tell it from the program's own exit code 2, as `docker run` and
`env` do) and 2 for every other subcommand; nothing runs. `submit` mirrors exec:
125. A refusal by the service (sandbox.client.errors) is one line too, with
the server's reason, under the same codes. An unexpected
exception is one line too (exit 125 for exec/run, 70 = EX_SOFTWARE elsewhere);
SANDBOX_DEBUG=1 shows its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

import sandbox
from sandbox.cli.plugins import optional_module
from sandbox.client.errors import ClientError, ConnectionFailed
from sandbox.errors import InputError, SandboxError

# Subcommands that run a program: their own failures use 125, as docker run does.
RUN_COMMANDS = ("exec", "run", "submit")
EXIT_INPUT = 2
EXIT_RUN_INPUT = 125
EXIT_INTERNAL = 70        # sysexits EX_SOFTWARE

# Order is the order shown by --help.
COMMANDS = ("exec", "run", "submit", "runs", "gc", "policy", "audit", "doctor", "demo", "bench",
            "serve", "token", "worker", "daemon")

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


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and the subcommand's input exit code
    (argparse's own prints the usage block and exits 2 everywhere)."""

    def error(self, message: str) -> NoReturn:
        words = self.prog.split()
        code = EXIT_RUN_INPUT if len(words) > 1 and words[1] in RUN_COMMANDS else EXIT_INPUT
        self.exit(code, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI's parser; with `only` (a subcommand's name), a parser that knows that
    one subcommand: building all of them (argparse, gettext, every module) costs a
    `sandbox exec` more than the rest of its argument handling."""
    parser = Parser(
        prog="sandbox", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"sandbox {sandbox.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS if only is None else (only,):
        module = optional_module(f"sandbox.cli.{name}_cmd")
        if module is not None:
            module.register(sub)
    return parser


def _one_line(text: str) -> str:
    from sandbox.printable import printable
    return printable(" ".join(str(text).split())) or "(no message)"


def _hold_stdio() -> None:
    """A caller may start us with stdin, stdout or stderr closed: put /dev/null there
    first, so no socket or pipe opened later takes the number and is mistaken for one
    (a sandbox's output relayed into the launcher's own control socket); which were
    closed is kept for the program (sandbox.std_fds.CALLER_CLOSED)."""
    from sandbox.std_fds import hold_caller_fds
    closed = hold_caller_fds()
    # Python started without one has None there; our own lines then go to /dev/null
    for fd, name in ((1, "stdout"), (2, "stderr")):
        if closed >> fd & 1 and getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", closefd=False))


def main(argv: list[str] | None = None,
         parser: argparse.ArgumentParser | None = None) -> int:
    """`parser`: one built before (the `sandbox exec` daemon builds it once)."""
    _hold_stdio()
    args0 = (sys.argv[1:] if argv is None else argv)[:1]
    if parser is None:
        # `sandbox exec ...` needs exec's parser only; help and errors about an unknown
        # subcommand need them all
        parser = build_parser(args0[0] if args0 and args0[0] in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    runs = args.command in RUN_COMMANDS
    from sandbox.cli.inside import refusal
    nested = refusal(args.command)
    if nested is not None:
        print(f"sandbox: error: {nested}", file=sys.stderr)
        return EXIT_RUN_INPUT
    if extra:
        print(f"sandbox {args.command}: error: unrecognized arguments: {' '.join(extra)} "
              f"(see sandbox {args.command} --help)", file=sys.stderr)
        return EXIT_RUN_INPUT if runs else EXIT_INPUT
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"sandbox: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_RUN_INPUT if runs else EXIT_INPUT
    except ClientError as exc:
        # the service refused, or could not be reached: its reason, on one line
        where = "; is `sandbox serve` running there?" if isinstance(exc, ConnectionFailed) \
            else ""
        print(f"sandbox {args.command}: error: {_one_line(str(exc))}{where}", file=sys.stderr)
        return EXIT_RUN_INPUT if runs else EXIT_INPUT
    except SandboxError as exc:
        # not the input, but something the user can act on (a damaged history file)
        print(f"sandbox: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_RUN_INPUT if runs else EXIT_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sandbox audit list | head`: the reader left; not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:
        # a path the caller named that cannot be read or written (`-o /proc/x`, ...)
        where = f": {exc.filename}" if exc.filename and str(exc.filename) not in str(exc) else ""
        print(f"sandbox: error: {_one_line(str(exc))}{where}", file=sys.stderr)
        return EXIT_RUN_INPUT if runs else EXIT_INPUT
    except Exception as exc:
        if os.environ.get("SANDBOX_DEBUG"):
            raise
        print(f"sandbox: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(SANDBOX_DEBUG=1 shows the traceback; please report it)", file=sys.stderr)
        return EXIT_RUN_INPUT if runs else EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
