"""`sandbox run WORKFLOW.json`: run a workflow definition in a sandbox."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from sandbox.cli import common
from sandbox.current_dir import current_dir

if TYPE_CHECKING:
    from sandbox.launcher.early import EarlyMonitor

HELP = """\
Run a workflow (stages of actions, see docs/workflows.md) in a fresh sandbox
and print a short summary, or the whole RunResult with --json. The policy is
--policy, else the one the workflow names, else 'default'.

exit codes (the table of sandbox exec, docs/run-result.md): 0 the workflow
completed (or bailed), 1 it failed (an action raised), 124 the wall-clock
limit, 125 the sandbox failed before the workflow ran, bad input included (one
line on stderr; nothing runs), 128+N its process was killed by signal N (a
limit kill: 137).

Action modules named in the workflow's "imports" (or as module:function) are
imported in the sandbox from the current directory and the workflow file's
directory, which the child may therefore read (not write).

An action's `ctx.send("progress", {"done": 3, "of": 10, "message": "..."})`
draws a progress bar on stderr when it is a terminal; --follow prints its log
records as they arrive.

examples:
  sandbox run docs/examples/hello.json
  sandbox run docs/examples/spawn_process.json --store 'items=[4, 5, 6]' --follow
  sandbox run docs/examples/spawn_process.json --policy strict --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a workflow definition (JSON) in a sandbox",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow", metavar="WORKFLOW.json")
    common.add_run_options(p)
    p.add_argument("--json", action="store_true", help="print the RunResult as JSON")
    p.add_argument("--store", action="append", default=[], metavar="KEY=VALUE",
                   help="an input in the initial store (repeatable); VALUE is JSON when it "
                        "parses (42, true, [1, 2]), else a string")
    p.add_argument("-f", "--follow", action="store_true",
                   help="print the action's log records (and progress) on stderr as they come")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is drawn only when stderr is a terminal)")
    p.set_defaults(func=run)


def summary(result) -> str:
    """The run in a few lines; what the actions chose (reasons, error messages) is
    rendered printable (sandbox.printable)."""
    from sandbox.printable import printable as P
    lines = [f"run {result.run_id}: {result.status}"
             + (f" ({P(result.reason)})" if result.reason else "")
             + f" in {result.wall_time:.3f}s"]
    if result.bailed:
        lines.append(f"  bailed: {P(result.bail_reason)}")
    lines.append(f"  store: {len(result.store)} keys ({len(result.changed_keys)} changed)")
    lines.append(f"  logs: {len(result.logs)}; messages: {sum(result.messages.values())}")
    if result.error:
        lines.append(f"  error: {P(result.error.get('type'))}: {P(result.error.get('message'))}"
                     f" (stage {P(result.error.get('stage'))}, "
                     f"action {P(result.error.get('action'))})")
    lines.append(f"  layers: {', '.join(result.layers) or 'none'}")
    lines.append(f"  output: {result.output_dir}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    early = common.early_monitor(None)   # it imports while this process does
    try:
        return _run(args, early)
    finally:
        if early is not None:
            early.discard()


def _run(args: argparse.Namespace, early: EarlyMonitor | None) -> int:
    from sandbox.launcher.launcher import Launcher
    from sandbox.workflow import load_workflow
    workflow = load_workflow(args.workflow)
    common.policy_path_hint(args.policy)
    common.preflight(args)
    code_paths = [current_dir()]
    wf_dir = os.path.dirname(os.path.abspath(args.workflow))
    if wf_dir != code_paths[0]:
        code_paths.append(wf_dir)
    from sandbox.workflow.static_check import check_actions
    check_actions(workflow, code_paths, where=args.workflow)
    from sandbox.cli.grants import compose
    policy = compose(args, args.policy or workflow.policy, run=True)
    from sandbox.cli.live import LiveView, parse_store
    store = parse_store(args.store)
    launcher = Launcher(start=common.CLI_START, early=early)
    bar = not args.no_progress and sys.stderr.isatty()
    with launcher, LiveView(launcher, follow=args.follow, bar=bar):
        result = launcher.spawn(workflow, policy=policy, timeout=args.timeout,
                                output_dir=args.output, code_paths=code_paths,
                                store=store or None)
    common.write_result(args.result, result, getattr(args, "result_fd", None))
    common.write_audit_log(args.audit_log, result, getattr(args, "audit_log_fd", None))
    common.report_run(args, result)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(summary(result))
    with common.stderr_may_be_full():
        if common.needs_explaining(result) and result.status not in ("ok", "error"):
            print(common.describe_failure(result, args.timeout, args), file=sys.stderr)
        common.print_hints(result)
    return common.exit_code_for(result)
