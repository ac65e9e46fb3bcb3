"""`sandbox submit`: run a program or a workflow on a `sandbox serve` (issue 16)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sandbox.cli import remote

HELP = """\
Submit a program (-- PROGRAM [ARGS...]) or a workflow (--workflow FILE.json) to
the execution service (docs/service.md) and print its run id. With --follow,
behave like `sandbox exec`: the program's stdout and stderr are streamed as it
runs, and the exit code is the run's (the exec table: N, 128+N, 124 timeout,
125 the sandbox or the service failed before the program ran, a lost run
included). submit's own errors (bad input, a refusal by the server, the server
unreachable) are one line on stderr and exit 125.

The server and token come from --server/--token, else SANDBOX_SERVER and
SANDBOX_TOKEN.

examples:
  export SANDBOX_SERVER=http://127.0.0.1:8700 SANDBOX_TOKEN=$(cat STATE/admin.token)
  sandbox submit --follow -- python3 -c 'print(1)'
  sandbox submit --policy strict --file data.csv --file tool=./bin/tool --follow -- ./tool data.csv
  sandbox submit --workflow docs/examples/hello.json --wait 30 --json
  id=$(sandbox submit -- sleep 60); sandbox runs --server "$SANDBOX_SERVER" cancel "$id"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run a program or workflow on a sandbox service",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    remote.add_server_options(p)
    p.add_argument("--workflow", metavar="FILE.json", help="submit this workflow (JSON)")
    pol = p.add_mutually_exclusive_group()
    pol.add_argument("--policy", metavar="NAME", help="a built-in or registered policy name "
                     "(default: the token's ceiling)")
    pol.add_argument("--policy-file", metavar="FILE.toml",
                     help="send this policy inline (checked by the server like any input)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="wall-clock limit (may only shorten the policy's)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--secret-env", action="append", default=[], metavar="NAME",
                   help="pass $NAME from this environment as a secret (never stored or echoed "
                        "by the server; the value is not on this command line)")
    p.add_argument("--file", action="append", default=[], metavar="[NAME=]PATH",
                   help="upload PATH into the run's input directory (its working directory) "
                        "as NAME (default: its base name); executable files stay executable")
    p.add_argument("--stdin", metavar="FILE", help="the program's whole stdin (- for ours)")
    p.add_argument("--retries", type=int, metavar="N",
                   help="re-queue up to N times if the executor dies (default 0: lost)")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="a retried submit with the same key returns the same run")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("-f", "--follow", action="store_true",
                   help="stream the run's output and exit with its code, like sandbox exec")
    p.add_argument("--wait", type=float, metavar="SECONDS",
                   help="wait up to SECONDS for the end before printing")
    p.add_argument("--json", action="store_true", help="print the run (RunView) as JSON")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARGS...]")
    p.set_defaults(func=run)


def _pairs(option: str, items: list[str]) -> dict[str, str]:
    from sandbox.errors import InputError
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"{option} {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read() if sys.stdin is not None else b""
    with open(path, "rb") as f:
        return f.read()


def request(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of Client.submit, from the command line (bad input: InputError)."""
    from sandbox.errors import InputError
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if bool(argv) == bool(args.workflow):
        raise InputError("give a program (-- PROGRAM [ARGS...]) or --workflow FILE, not both "
                         "or neither")
    kw: dict[str, Any] = {}
    if args.workflow:
        try:
            kw["workflow"] = json.loads(_read(args.workflow))
        except ValueError as exc:
            raise InputError(f"--workflow {args.workflow}: not JSON: {exc}") from None
    else:
        kw["argv"] = argv
    if args.policy_file:
        import tomllib
        try:
            kw["policy"] = tomllib.loads(_read(args.policy_file).decode())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"--policy-file {args.policy_file}: not TOML: {exc}") from None
    elif args.policy:
        kw["policy"] = args.policy
    if args.timeout is not None:
        if args.timeout <= 0:
            raise InputError(f"--timeout must be positive, got {args.timeout}")
        kw["timeout"] = args.timeout
    if args.retries is not None:
        if args.retries < 0:
            raise InputError(f"--retries must be 0 or more, got {args.retries}")
        kw["retries"] = args.retries
    kw["env"] = _pairs("--env", args.env)
    secrets = {}
    for name in args.secret_env:
        if name not in os.environ:
            raise InputError(f"--secret-env {name}: not set in this environment")
        secrets[name] = os.environ[name]
    kw["secret_env"] = secrets
    kw["labels"] = _pairs("--label", args.label)
    files: dict[str, Any] = {}
    for spec in args.file:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = os.path.basename(spec.rstrip("/")), spec
        data = _read(path)
        files[name] = (data, "rx" if os.access(path, os.X_OK) else "r")
    kw["files"] = files
    if args.stdin is not None:
        kw["stdin"] = _read(args.stdin)
    if args.idempotency_key:
        kw["idempotency_key"] = args.idempotency_key
    if args.wait is not None:
        if not 0 < args.wait <= 300:
            raise InputError(f"--wait must be in (0, 300] seconds, got {args.wait}")
        kw["wait"] = args.wait
    return kw


def run(args: argparse.Namespace) -> int:
    from sandbox.cli import common
    kw = request(args)
    with remote.client(args) as c:
        view = c.submit(kw.pop("argv", None), **kw)
        if not args.follow:
            print(remote.dump_json(view) if args.json else view.id)
            return 0
        for ev in c.events(view.id):
            if ev.event in ("stdout", "stderr") and isinstance(ev.data, dict):
                remote.write_stream(ev.event, str(ev.data.get("text", "")))
        view = c.wait(view.id)
    if args.json:
        print(remote.dump_json(view))
    result = remote.as_result(view)
    if common.needs_explaining(result):
        remote.say(f"run {view.id}: {view.status}: {result.reason}")
    for hint in result.hints[:3]:
        remote.say(f"hint: {hint}")
    return common.exit_code_for(result)
