"""`sandbox bench`: medians, p95/p99 and ratios against peers, measured in one run."""
from __future__ import annotations

import argparse
import json
import sys

HELP = """\
Benchmark sandbox side by side with bubblewrap and firejail (when installed:
apt-get install bubblewrap firejail), plain subprocess and a minimal C
seccomp-notify loop (built with cc), all in this run on this machine, and
print every target as a ratio with PASS, MISS or N/A. Takes a few minutes
(--quick: about a minute). --plot DIR draws the figures (needs matplotlib:
pip install 'sandbox[bench]'). Figures and their meaning: docs/benchmarks.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks against bwrap, firejail and subprocess",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50, help="runs per round-trip contender")
    p.add_argument("--quick", action="store_true", help="fewer runs, smaller counts")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--plot", metavar="DIR", help="write bench-*.png into DIR (matplotlib)")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write the run's tables as Markdown into FILE, as "
                        "docs/benchmarks.md shows them")
    p.add_argument("--workers", metavar="N[,N...]", default=None,
                   help="instead: runs/s through Dramatiq on Redis with N `sandbox worker`s "
                        "against the in-process queue (needs redis-server; docs/scaling.md)")
    p.add_argument("--service", action="store_true",
                   help="only the execution service: runs through `sandbox serve`'s API beside "
                        "the direct Launcher API (latency p50/p99, runs per second)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers is not None:
        return _workers(args)
    if args.service:
        from sandbox.bench.service import render as render_service, run_service
        log_ = (lambda s: print(s, file=sys.stderr))
        runs = min(args.runs, 10) if args.quick else args.runs
        res = run_service(runs=runs, total=40 if args.quick else 200, log=log_)
        print(json.dumps(res, indent=2) if args.json else render_service(res))
        return 0
    from sandbox.bench.report import render, run_all
    if args.runs < 1:
        print("sandbox bench: --runs must be at least 1", file=sys.stderr)
        return 2
    if args.plot:
        from sandbox.bench.plot import PlotUnavailable, _pyplot
        try:
            _pyplot()   # fail before minutes of measuring, not after
        except PlotUnavailable as exc:
            print(f"sandbox bench: {exc}", file=sys.stderr)
            return 2
    if args.markdown:
        try:
            open(args.markdown, "a").close()   # fail before minutes of measuring, not after
        except OSError as exc:
            print(f"sandbox bench: --markdown {args.markdown}: {exc.strerror}", file=sys.stderr)
            return 2
    log = (lambda s: print(s, file=sys.stderr))
    res = run_all(runs=args.runs, quick=args.quick, log=log)
    print(json.dumps(res, indent=2) if args.json else render(res))
    if args.markdown:
        from sandbox.bench.markdown import render as render_markdown
        with open(args.markdown, "w") as f:
            f.write(render_markdown(res, " ".join(["sandbox", "bench", *sys.argv[2:]])))
        print(f"wrote {args.markdown}", file=sys.stderr)
    if args.plot:
        from sandbox.bench.plot import draw
        for path in draw(res, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _workers(args: argparse.Namespace) -> int:
    from sandbox.errors import InputError
    try:
        counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > 16:
        raise InputError(f"--workers {args.workers!r}: give counts 1..16 separated by commas, "
                         "e.g. 1,2,3")
    from sandbox.bench import scaleout
    res = scaleout.measure(counts, runs=40 if args.quick else 200,
                           log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps(res, indent=2) if args.json else scaleout.render(res))
    return 0
