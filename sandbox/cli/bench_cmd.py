"""`sandbox bench`: medians, p95 and ratios against peers, measured in one run."""
from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Benchmark sandbox side by side with bubblewrap and firejail (when installed:
apt-get install bubblewrap firejail) and plain subprocess, all in this run on
this machine, and compare with the project's targets. Takes a few minutes
(--quick: under a minute). Figures and their meaning: docs/benchmarks.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks against bwrap, firejail and subprocess",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50, help="runs per round-trip contender")
    p.add_argument("--quick", action="store_true", help="fewer runs, smaller counts")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sandbox.bench.report import render, run_all
    log = (lambda s: print(s, file=sys.stderr))
    res = run_all(runs=args.runs, quick=args.quick, log=log)
    print(json.dumps(res, indent=2) if args.json else render(res))
    return 0
