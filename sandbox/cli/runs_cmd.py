"""`sandbox runs list|show|logs|rm`: the run history (sandbox.history).

What a run chose (its log records, an action's exception message as the reason,
the names in its result) is printed through `sandbox.printable`, as `sandbox run`
and `sandbox runs --server` print it: one line, nothing a terminal acts on. Only
the program's own stdout and stderr pass as they are, as `sandbox exec` relays
them."""
from __future__ import annotations

import argparse
import json
import sys
import time

from sandbox.printable import printable as P

HELP = """\
Every run started by `sandbox exec`, `sandbox run` or a Launcher is recorded
as it ends, with its whole RunResult, in $SANDBOX_HOME/history/runs.sqlite
(default ~/.local/state/sandbox/, 0700; hidden from every sandbox). Records
older than 30 days go by themselves; `sandbox gc` prunes sooner. RUN_ID may be
a unique prefix. `sandbox runs` alone is `sandbox runs list`.

examples:
  sandbox runs list
  sandbox runs list --status error -n 5
  sandbox runs show "$(sandbox runs list -q -n 1)"      the latest run
  sandbox runs show 3f2a
  sandbox runs logs 3f2a
  sandbox runs rm 3f2a 9c01

With --server URL (and --token or $SANDBOX_TOKEN), the same verbs act on an
execution service's runs (docs/service.md), and cancel, download, audit and
events are there too; RUN_ID is then the service's id:
  sandbox runs --server http://127.0.0.1:8700 list --status running
  sandbox runs --server http://127.0.0.1:8700 download run_... -o ./out
"""

REMOTE_ONLY = ("cancel", "download", "audit", "events")



def _size(text: str) -> int:
    from sandbox.policy.units import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list and show past runs (the run history)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    from sandbox.cli import remote
    remote.add_server_options(p, env_default=False)
    actions = p.add_subparsers(dest="runs_action", metavar="ACTION")
    ls = actions.add_parser("list", help="recorded runs, newest first")
    ls.add_argument("-n", type=int, default=50, metavar="N", help="at most N runs (default 50)")
    ls.add_argument("--status", metavar="STATUS", help="only runs that ended with this status")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("-q", "--quiet", action="store_true", help="only the run ids")
    ls.set_defaults(func=list_runs)
    sh = actions.add_parser("show", help="a run's RunResult")
    sh.add_argument("run_id", metavar="RUN_ID")
    sh.add_argument("--json", action="store_true", help="the whole RunResult as JSON")
    sh.set_defaults(func=show)
    lg = actions.add_parser("logs", help="a run's log records and captured output")
    lg.add_argument("run_id", metavar="RUN_ID")
    lg.set_defaults(func=logs)
    rm = actions.add_parser("rm", help="forget runs (and remove the output dirs sandbox made)")
    rm.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    rm.set_defaults(func=remove)
    cn = actions.add_parser("cancel", help="cancel queued or running runs (--server)")
    cn.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    dl = actions.add_parser("download", help="a run's output files (--server)")
    dl.add_argument("run_id", metavar="RUN_ID")
    dl.add_argument("paths", nargs="*", metavar="PATH", help="these outputs (default: all)")
    dl.add_argument("-o", "--output", default=".", metavar="DIR",
                    help="write under DIR (default: here); never outside it, never over a file")
    dl.add_argument("--max-bytes", type=_size, default=None, metavar="SIZE",
                    help="fetch all outputs only if they add up to at most SIZE (default "
                         "1GiB; holes count, as they cross the network as zeros)")
    au = actions.add_parser("audit", help="a run's audit records (--server)")
    au.add_argument("run_id", metavar="RUN_ID")
    au.add_argument("--denied", action="store_true", help="only the refused accesses")
    au.add_argument("--json", action="store_true")
    ev = actions.add_parser("events", help="follow a run's events to its end (--server)")
    ev.add_argument("run_id", metavar="RUN_ID")
    ev.add_argument("--after", metavar="EVENT_ID", help="resume after this event id")
    ev.add_argument("--json", action="store_true", help="one JSON object per event")
    for name, action in actions.choices.items():
        remote.add_server_options(action, env_default=False, suppress=True)
        action.set_defaults(func=_dispatch(name, action.get_default("func")))
    from sandbox.cli.common import default_action
    default_action(p, actions, "list")


def _dispatch(name: str, local: object) -> object:
    """--server (or a remote-only verb) goes to sandbox.cli.runs_remote."""
    def run(args: argparse.Namespace) -> int:
        from sandbox.errors import InputError
        if getattr(args, "server", None):
            from sandbox.cli import runs_remote
            remote_fn = getattr(runs_remote, "list_runs" if name == "list" else name, None)
            if remote_fn is None:
                raise InputError(f"sandbox runs {name} is for the local history only "
                                 "(drop --server)")
            return int(remote_fn(args) or 0)
        if local is None:
            raise InputError(f"sandbox runs {name} needs --server URL (a service's runs)")
        return int(local(args) or 0)   # type: ignore[operator]
    return run


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _command(kind: str, command: str) -> str:
    if kind == "exec":
        try:
            import shlex
            return shlex.join(json.loads(command))
        except (ValueError, TypeError):
            return command
    return f"workflow {command}"


def list_runs(args: argparse.Namespace) -> int:
    from sandbox.errors import InputError
    from sandbox.history import History
    from sandbox.launcher.result import Status
    if args.n < 1:
        raise InputError(f"-n must be at least 1, got {args.n}")
    if args.status is not None and args.status not in tuple(Status):
        raise InputError(f"--status {args.status!r}: one of {', '.join(Status)}")
    entries = History().list(limit=args.n, status=args.status)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if args.quiet:
        for e in entries:
            print(e.run_id)
        return 0
    for e in entries:
        code = f"signal {e.signal}" if e.signal is not None else \
            ("" if e.exit_code is None else f"exit {e.exit_code}")
        print(f"{e.run_id[:12]}  {_when(e.ended)}  {P(e.status):<14} {code:<10} "
              f"{e.wall_time:>8.3f}s  {P(e.policy or '-'):<10} "
              f"{P(_command(e.kind, e.command))[:60]}")
    return 0


def show(args: argparse.Namespace) -> int:
    from sandbox.history import History
    entry, result = History().get(args.run_id)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"run {entry.run_id}")
    print(f"  command:  {P(_command(entry.kind, entry.command))}")
    print(f"  status:   {P(entry.status)}" + (f" ({P(str(result.get('reason')))})"
                                               if result.get("reason") else ""))
    if entry.exit_code is not None:
        print(f"  exit:     {entry.exit_code}")
    if entry.signal is not None:
        print(f"  signal:   {entry.signal}")
    print(f"  started:  {_when(entry.started)}   wall {entry.wall_time:.3f}s   "
          f"cpu {result.get('cpu_time', 0):.3f}s")
    print(f"  policy:   {P(entry.policy)}")
    print(f"  output:   {P(entry.output_dir) or '(none: the run wrote nothing)'}")
    print(f"  layers:   {P(', '.join(map(str, result.get('layers') or []))) or 'none'}")
    if result.get("store"):
        print(f"  store:    {len(result['store'])} keys")
    if result.get("logs"):
        print(f"  logs:     {len(result['logs'])} records (sandbox runs logs {entry.run_id[:12]})")
    cut = result.get("history_trimmed")
    if cut:
        what = P(", ".join(f"{k} ({v} more)" for k, v in sorted(cut.items())))
        print(f"  trimmed:  {what}: the history keeps 1 MiB of a result; --result has it whole")
    return 0


def logs(args: argparse.Namespace) -> int:
    from sandbox.history import History
    _, result = History().get(args.run_id)
    out = sys.stdout
    for rec in result.get("logs") or []:
        if not isinstance(rec, dict):
            out.write(f"{P(str(rec))}\n")
            continue
        level = P(str(rec.get("level", "info")).upper())
        where = f" [{P(str(rec['action']))}]" if rec.get("action") else ""
        out.write(f"{level:<7}{where} {P(str(rec.get('message', rec)))}\n")
    for stream in ("stdout", "stderr"):
        text = result.get(stream)
        if text:
            out.write(f"--- {stream} ---\n{text}")
            if not text.endswith("\n"):
                out.write("\n")
    return 0


def remove(args: argparse.Namespace) -> int:
    from sandbox.history import History
    for run_id in History().remove(args.run_ids):
        print(f"removed {run_id}")
    return 0
