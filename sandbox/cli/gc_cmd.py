"""`sandbox gc [--older-than 7d]`: prune the run history and old run directories."""
from __future__ import annotations

import argparse

HELP = """\
Forget runs that ended longer ago than --older-than (default 30d, the
retention applied by itself), remove the output directories sandbox made for
them under $SANDBOX_HOME/runs/, and remove empty run directories left there.
Output directories you chose with --output are never touched.

examples:
  sandbox gc --older-than 7d
  sandbox gc --older-than 0s        forget every recorded run
"""


def _age(text: str) -> float:
    from sandbox.policy.units import parse_duration
    try:
        if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
            return float(text[:-1]) * 86400.0
        if text.strip() in ("0", "0s"):
            return 0.0
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or days: \"7d\")") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gc", help="prune the run history and old run directories",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--older-than", type=_age, default="30d", metavar="AGE",
                   help='e.g. "7d", "12h", "30m" (default 30d)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sandbox.history import History
    gone = History().gc(args.older_than)
    print(f"forgot {len(gone)} run(s)")
    return 0
