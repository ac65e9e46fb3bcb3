"""`sandbox gc [--older-than 7d]`: prune the run history and old run directories."""
from __future__ import annotations

import argparse
import os

from sandbox.cli.common import age_arg

HELP = """\
Forget runs that ended longer ago than --older-than (default 30d, the
retention applied by itself), remove the output directories sandbox made for
them under $SANDBOX_HOME/runs/, and remove empty run directories left there.
Output directories you chose with --output are never touched.

With --state DIR (a `sandbox serve` state directory), also apply the retention of `sandbox serve` to
its state directory: runs that ended longer ago than --older-than (default:
the --retain the server was started with; nothing without either) are
deleted with their outputs, inputs, events and audit records. Queued and
running runs are never touched.

examples:
  sandbox gc --older-than 7d
  sandbox gc --older-than 0s        forget every recorded run
  sandbox gc --state /var/lib/sandbox-service
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gc", help="prune the run history and old run directories",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--older-than", type=age_arg, default=None, metavar="AGE",
                   help='e.g. "7d", "12h", "30m" (default 30d; for --service-state: '
                   "the server's --retain)")
    p.add_argument("--state", "--service-state", dest="service_state", metavar="DIR",
                   default=None,
                   help="also apply retention to this `sandbox serve` state directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sandbox.history import History
    gone = History().gc(args.older_than if args.older_than is not None else 30 * 86400.0)
    print(f"forgot {len(gone)} run(s)")
    if args.service_state is not None:
        from sandbox.service.retention import apply, stored_retention
        from sandbox.service.config import ServiceConfig
        from sandbox.service.tokens import open_store
        from sandbox.errors import InputError
        if not os.path.isfile(os.path.join(args.service_state, "service.db")):
            raise InputError(f"--state {args.service_state}: no sandbox serve store there")
        store = open_store(args.service_state)
        try:
            age = args.older_than if args.older_than is not None else stored_retention(store)
            if age is None:
                print("service: no retention (the server has no --retain; give --older-than)")
                return 0
            config = ServiceConfig(state=os.path.realpath(args.service_state))
            removed = apply(store, config, age)
        finally:
            store.close()
        print(f"service: deleted {len(removed)} run(s)")
    return 0
