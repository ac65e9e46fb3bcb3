"""`sandbox policy check|explain|show|list`: inspect policies without running anything.

Each action is a (register, handler) pair in ACTIONS; further actions live in
their own modules `sandbox/cli/policy_<name>_cmd.py` exposing
`register(subparsers)` (as the top-level commands do), found by EXTRA_ACTIONS,
so adding `policy suggest` does not need to edit this file's logic.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sandbox.cli.grants import add_grant_options, compose
from sandbox.cli.plugins import optional_module
from sandbox.current_dir import current_dir
from sandbox.errors import PolicyError

EXTRA_ACTIONS = ("suggest", "list")

HELP = """\
Check, explain and show policies. POLICY is a name on the policy search path
(strict, default, base, ...) or a .toml file; see docs/policy-reference.md.

examples:
  sandbox policy check my.toml                  validate; one-line summary, or errors (exit 2)
  sandbox policy explain strict read /etc/shadow
  sandbox policy explain default write out/x --output out
  sandbox policy show strict                    the merged, resolved policy as TOML
  sandbox policy show strict --read ~/data --net loopback    with command-line grants
  sandbox policy list                           the policies --policy can name
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="check, explain and show policies", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION")
    actions.required = True

    c = actions.add_parser("check", help="validate a policy (exit 0) or list its errors (exit 2)")
    c.add_argument("policy", metavar="POLICY")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=check)

    e = actions.add_parser(
        "explain", help="may the sandbox do OPERATION on PATH (or connect to HOST:PORT), "
                        "and which rule says so",
        description="Prints the verdict and the deciding rule. Exit 0 when allowed, 1 when "
                    "denied, 2 on bad input. Variables: ${WORKDIR} = --workdir (default: the "
                    "current directory), ${OUTPUT} = --output (default: ./output). PATH is made "
                    "absolute and canonical (symlinks resolved) as the kernel would see it. "
                    "connect HOST:PORT: the allowlist's verdict, the name resolved on this host "
                    "as the proxy would (or the --address values given).")
    e.add_argument("policy", metavar="POLICY")
    e.add_argument("operation", choices=("read", "write", "create", "delete", "exec", "metadata",
                                         "connect"))
    e.add_argument("path", metavar="PATH", help="a path, or HOST:PORT for connect")
    e.add_argument("--address", action="append", default=[], metavar="IP",
                   help="connect: take these addresses as the name's answer instead of "
                        "resolving it on this host; repeatable")
    _add_variable_options(e)
    e.add_argument("--json", action="store_true", help="print the verdict as JSON")
    add_grant_options(e)
    e.set_defaults(func=explain)

    s = actions.add_parser("show", help="print the merged, resolved policy")
    s.add_argument("policy", metavar="POLICY")
    _add_variable_options(s)
    s.add_argument("--raw", action="store_true", help="keep ${VARIABLES} unresolved")
    s.add_argument("--plan", action="store_true",
                   help="also build the filesystem plan on this host (binds and masks)")
    s.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    add_grant_options(s)
    s.set_defaults(func=show)

    for name in EXTRA_ACTIONS:
        module = optional_module(f"sandbox.cli.policy_{name}_cmd")
        if module is not None:
            module.register(actions)


def _add_variable_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", metavar="DIR", help="${WORKDIR} (default: the current directory)")
    p.add_argument("--output", metavar="DIR", help="${OUTPUT} (default: ./output)")
    p.add_argument("--home", metavar="DIR", help="${HOME} (default: $HOME)")


def resolved_policy(args: argparse.Namespace) -> Any:
    """Load args.policy and resolve it with the CLI's variable defaults."""
    from sandbox.policy import default_variables, resolve
    policy = _composed(args)
    variables = default_variables(args.workdir or current_dir(), args.output or "output", args.home)
    return resolve(policy, variables)


def _composed(args: argparse.Namespace) -> Any:
    """The named policy with the command line's grants (--read, --net, ...)."""
    from sandbox.policy import Policy, load_policy
    policy = compose(args, args.policy)
    return policy if isinstance(policy, Policy) else load_policy(args.policy)


def _error_dicts(exc: PolicyError) -> list[dict[str, Any]]:
    return [{"file": e.file, "line": e.line, "key": e.key, "message": e.detail, "text": str(e)}
            for e in getattr(exc, "errors", [exc])]


def check(args: argparse.Namespace) -> int:
    from sandbox.policy import default_variables, load_policy, resolve
    from sandbox.policy.render import notes, summary
    try:
        policy = load_policy(args.policy)
        # Resolution is part of validity: a variable must expand to absolute paths.
        resolve(policy, default_variables(current_dir(), "output"))
    except PolicyError as exc:
        errors = _error_dicts(exc)
        if args.json:
            print(json.dumps({"ok": False, "policy": args.policy, "errors": errors}, indent=2))
        else:
            for e in errors:
                print(f"sandbox: error: {e['text']}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": True, "policy": args.policy, "source": policy.source,
                          "summary": summary(policy), "notes": notes(policy),
                          "policy_data": policy.to_dict()}, indent=2))
    else:
        print(f"ok: {summary(policy)}")
        for note in notes(policy):
            print(f"sandbox: note: {note}", file=sys.stderr)
    return 0


def explain(args: argparse.Namespace) -> int:
    if args.operation == "connect":
        from sandbox.cli.policy_connect import explain_connect
        return explain_connect(args, resolved_policy(args))
    from sandbox.policy import decide
    from sandbox.policy import workdir_overlay as overlay
    from sandbox.policy.canonical import kernel_path
    policy = resolved_policy(args)
    given = os.path.abspath(args.path)
    # Not realpath(abspath(...)): `..` must apply after symlinks, unlink does not
    # follow the last one, and a directory missing from the sandbox's view stops the walk.
    canonical = kernel_path(args.path, args.operation, policy=policy)
    verdict = decide(policy, args.operation, canonical)
    # copy-on-write: a write in the work directory is the run's own layer's, as the
    # launcher grants it (sandbox/policy/workdir_overlay.py)
    verdict = overlay.explain(policy, args.workdir or current_dir(), args.operation,
                              canonical, verdict)
    if args.json:
        print(json.dumps({"policy": policy.name, "operation": args.operation, "path": args.path,
                          "absolute": given, "canonical": canonical,
                          "allowed": verdict.allowed, "rule": verdict.rule,
                          "reason": verdict.reason}, indent=2))
    else:
        word = "allowed" if verdict.allowed else "denied"
        shown = given if given == canonical else f"{given} -> {canonical}"
        print(f"{word}: {args.operation} {shown}")
        print(f"  rule:   {verdict.rule}")
        print(f"  reason: {verdict.reason}")
    return 0 if verdict.allowed else 1


def show(args: argparse.Namespace) -> int:
    from sandbox.policy import build_plan, load_policy
    from sandbox.policy.render import to_toml
    policy = _composed(args) if args.raw else resolved_policy(args)
    plan = build_plan(policy) if args.plan and not args.raw else None
    if args.json:
        out: dict[str, Any] = {"policy": policy.to_dict()}
        if plan is not None:
            out["plan"] = plan.to_dict()
        print(json.dumps(out, indent=2))
        return 0
    print(f"# policy {policy.name!r} from {policy.source}" + ("" if args.raw else ", variables resolved"))
    print(to_toml(policy), end="")
    if plan is not None:
        print("\n# filesystem plan on this host (binds: r=read w=write x=exec)")
        for r in plan.rules:
            flags = ("r" if r.read else "-") + ("w" if r.write else "-") + ("x" if r.exec else "-")
            print(f"#   {flags} {r.path}    ({r.rule})")
        for m in plan.masks:
            print(f"#   mask {m}")
    return 0
