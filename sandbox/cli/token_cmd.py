"""`sandbox token create|list|revoke`: the service's bearer tokens (docs/service.md)."""
from __future__ import annotations

import argparse
import json

HELP = """\
Manage the bearer tokens of `sandbox serve`, in its state directory's store
(the server may be running). A token is shown once, when created; only its
hash is stored. A run's policy may not be looser than its token's ceiling.

examples:
  sandbox token create --name ci --ceiling strict --max-concurrent 4 --max-queued 100 --rate 10/s
  sandbox token create --name gpu-team --queues gpu,default   # with serve --broker
  sandbox token list
  sandbox token revoke ci
"""


def _queues(text: str) -> list[str]:
    """A comma-separated list of queue names (checked by TokenCreate)."""
    return [q.strip() for q in text.split(",") if q.strip()]


def _rate(text: str) -> float:
    num = text[:-2] if text.endswith("/s") else text
    try:
        value = float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give submissions per second, "
                                         "e.g. 10/s") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number per second")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="create, list and revoke the service's tokens",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", default=None, metavar="DIR",
                   help="the service's state directory (as given to sandbox serve)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    c = verbs.add_parser("create", help="make a token (printed once)")
    c.add_argument("--name", required=True)
    c.add_argument("--ceiling", default=None, metavar="POLICY",
                   help="a policy no run of this token may exceed (default: default)")
    c.add_argument("--max-concurrent", type=int, default=4, metavar="N")
    c.add_argument("--max-queued", type=int, default=100, metavar="N")
    c.add_argument("--rate", type=_rate, default=None, metavar="N/s")
    c.add_argument("--queues", type=_queues, default=None, metavar="Q1,Q2",
                   help="with --broker: the only queues its runs may name in their "
                        "`queue` label ('default' when they name none); default: any "
                        "queue a live worker serves")
    c.add_argument("--admin", action="store_true", help="sees every run; no ceiling")
    c.add_argument("--json", action="store_true")
    ls = verbs.add_parser("list", help="every token (never the secrets)")
    ls.add_argument("--json", action="store_true")
    r = verbs.add_parser("revoke", help="revoke by id or name")
    r.add_argument("ident", metavar="ID_OR_NAME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from sandbox.errors import InputError
    from sandbox.service.models import TokenCreate
    from sandbox.service.tokens import create, open_store, row_view
    store = open_store(args.state)
    try:
        if args.verb == "create":
            try:
                spec = TokenCreate(name=args.name, ceiling=None if args.admin else
                                   (args.ceiling or "default"),
                                   max_concurrent=args.max_concurrent,
                                   max_queued=args.max_queued, rate=args.rate, admin=args.admin,
                                   queues=args.queues)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first.get("loc", ()))
                raise InputError(f"--{where.split('.')[0].replace('_', '-')}: "
                                 f"{first['msg'].removeprefix('Value error, ')}") from None
            made = create(store, spec)
            if args.json:
                print(made.model_dump_json())
            else:
                print(made.token)
            return 0
        if args.verb == "list":
            rows = [row_view(t) for t in store.tokens()]
            if args.json:
                print(json.dumps([r.model_dump() for r in rows]))
            else:
                for t in rows:
                    state = "revoked" if t.revoked_at else "live"
                    print(f"{t.id}  {t.name:<16} {state:<8} ceiling={t.ceiling or '-':<10} "
                          f"concurrent={t.max_concurrent} queued={t.max_queued} "
                          f"rate={t.rate if t.rate is not None else '-'}"
                          f"{' queues=' + ','.join(t.queues) if t.queues is not None else ''}"
                          f"{' admin' if t.admin else ''}")
            return 0
        if not store.revoke_token(args.ident):
            raise InputError(f"no live token with id or name {args.ident!r}")
        print(f"revoked {args.ident}")
        return 0
    finally:
        store.close()
