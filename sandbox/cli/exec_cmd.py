"""`sandbox exec -- PROGRAM [ARGS...]`: run a program under containment."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING

from sandbox.cli import common
from sandbox.current_dir import current_dir

if TYPE_CHECKING:
    from sandbox.launcher.early import EarlyMonitor

HELP = """\
Run PROGRAM in a fresh sandbox. Its stdout and stderr pass through untouched;
sandbox itself prints nothing on stdout, and only a one-line reason on stderr
when the run did not end normally.

exit codes (docs/run-result.md):
  N        the program's own exit code
  128+N    the program was killed by signal N (a limit kill: 137); killed by
           SIGINT or SIGQUIT (^C, ^\\), sandbox exec dies of it too, as the
           calling shell expects
  124      the wall-clock limit (--timeout or the policy's) was reached
  125      the sandbox failed before the program ran, bad input included
  126      the program cannot be executed (e.g. the policy grants no exec there)
  127      the program was not found (not on PATH, or not in the sandbox's view)

stdin passes through (--stdin none closes it); -t gives the program a terminal
of its own. Run at an interactive terminal (stdin, stdout and stderr all the
terminal, in the foreground) it gets one without -t, as a direct run would see
a terminal; --no-tty keeps pipes. What the program does not read of a file or pipe given as stdin is
left to the next reader, as after a direct run: `find . | while read f; do
sandbox exec ... "$f"; done` goes round every line. The program never holds the
caller's descriptors: its stdin, stdout and stderr are pipes (or that pty)
relayed by the sandbox's monitor, so a program that reads ahead and seeks back
on a file (GNU head -n) takes what it read ahead, as from a pipe; stdout and
stderr sent to one place (2>&1) share one pipe and keep their order.
SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and every other signal whose
default ends a process, sent to sandbox exec or its process group, are relayed
to the program once. The program inherits the caller's ignored signals (nohup)
and signal mask, umask, nice value, I/O priority, oom_score_adj and soft limits
(the policy's [limits] over them), as a direct exec does.

The working directory is the current one (${WORKDIR}); the policy decides
whether the program may read it. The program runs as PID 2, under the
sandbox's init.

examples:
  sandbox exec -- /bin/echo hi
  sandbox exec --policy strict --timeout 5 -- python3 -c 'import os; print(os.getpid())'
  sandbox exec --read ~/data --write ./out --net loopback --memory 1G -- ./tool
  sandbox exec --result run.json -- sh -c 'exit 7'; echo $?     # 7
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exec", help="run a program under containment",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_run_options(p)
    p.add_argument("--workdir", metavar="DIR", help="working directory (default: the current one)")
    p.add_argument("--stdin", choices=("inherit", "none"), default="inherit",
                   help="inherit (default): the program reads what sandbox exec reads, "
                        "relayed through a pipe; none: an empty, closed stdin")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="keep stdin attached (the default; overrides --stdin none)")
    p.add_argument("-t", "--tty", action="store_true",
                   help="give the program a pseudo-terminal of its own (made outside the "
                        "sandbox and relayed; window size and keys pass through). "
                        "stdout and stderr are then both the terminal. The default when "
                        "stdin, stdout and stderr are all the caller's terminal and "
                        "sandbox exec is its foreground job. With a stdin that is no "
                        "terminal, the terminal echoes it into the output (warned)")
    p.add_argument("-T", "--no-tty", action="store_true",
                   help="never a pseudo-terminal: pipes even at an interactive terminal")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    p.set_defaults(func=run)


PIPED_TTY = ("sandbox: warning: stdin is not a terminal: what it sends is echoed by the "
             "program's terminal (-t), so it appears in the output too; leave -t out for "
             "piped input")


def run(args: argparse.Namespace) -> int:
    from sandbox.errors import InputError
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.tty and args.no_tty:
        raise InputError("-t and --no-tty contradict each other: give one")
    if not argv:
        raise InputError("no program given: sandbox exec [OPTIONS] -- PROGRAM [ARGS...]")
    # Started with stdin closed (sys.stdin is None), fd 0 may since name another file.
    inherit = (args.stdin == "inherit" or args.interactive) and sys.stdin is not None
    stdin = 0 if inherit else None
    early = common.early_monitor(stdin)   # it imports while this process does
    try:
        return _run(args, argv, stdin, early)
    finally:
        if early is not None:
            early.discard()


def _run(args: argparse.Namespace, argv: list[str], stdin: int | None,
         early: EarlyMonitor | None) -> int:
    from sandbox.launcher.launcher import Launcher
    common.policy_path_hint(args.policy)
    common.preflight(args)
    from sandbox.cli.grants import compose
    from sandbox.launcher.signals import RawTerminal
    policy = compose(args, args.policy, run=True)
    tty = args.tty
    if not tty and not args.no_tty and stdin is not None:
        from sandbox.cli import terminal
        tty = terminal.interactive(common.CLI_CALLER_PID or os.getpid())
    elif tty and stdin is not None and not os.isatty(stdin):
        # the pty echoes what is written to it, as a terminal echoes keys: piped input
        # comes back in the output (`echo hi | sandbox exec -t -- cat` printed hi twice).
        # Kept, as asked (the program sets its terminal's modes), and said, as ssh -t does
        print(PIPED_TTY, file=sys.stderr)
    raw = RawTerminal(0) if tty and stdin is not None else contextlib.nullcontext()
    with raw:
        if common.CLI_FORKSERVER is not None:
            launcher = Launcher(start="forkserver", forkserver=common.CLI_FORKSERVER,
                                history=common.CLI_HISTORY or True)
        else:
            launcher = Launcher(start=common.CLI_START, early=early)
        launcher.caller_pid = common.CLI_CALLER_PID   # a warm run: the client's state
        from sandbox import std_fds
        launcher.caller_closed = std_fds.CALLER_CLOSED   # closed for the program too
        if isinstance(raw, RawTerminal):
            launcher.typed_ahead = raw.ahead
            launcher.terminal = raw
        result = launcher.spawn(
            argv, policy=policy, timeout=args.timeout,
            workdir=args.workdir or current_dir(), output_dir=args.output,
            stdin=stdin, tty=tty, forward_signals=True)
    common.write_result(args.result, result, getattr(args, "result_fd", None))
    common.write_audit_log(args.audit_log, result, getattr(args, "audit_log_fd", None))
    with common.stderr_may_be_full():
        common.report_run(args, result)
        if common.needs_explaining(result):
            print(common.describe_failure(result, args.timeout, args), file=sys.stderr)
        common.print_hints(result)
        if args.verbose or sys.stderr.isatty():   # a person reads it; a script's is kept
            for note in (common.shadowed_program(argv, result), common.workdir_note(result)):
                if note:
                    print(note, file=sys.stderr)
    from sandbox.process_end import DIE_WITH
    if result.status == "signaled" and result.signal in DIE_WITH:
        common.CLI_DIE_BY = result.signal   # as the program did: the shell sees a ^C
    return common.exit_code_for(result)
