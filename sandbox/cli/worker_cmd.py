"""`sandbox worker`: run sandboxes for a `sandbox serve --broker` on this host."""
from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import urllib.parse

from sandbox.cli.common import age_arg

HELP = """\
Take runs from the broker (Dramatiq on Redis) that `sandbox serve --broker`
hands out, run each in a fresh sandbox with this host's launcher, and report
events, outputs and results back through Redis; the server keeps the record.
Each run is leased: a worker that stops renewing (killed, cut off) has its run
re-queued (when the submitter allowed retries) or ended `lost`, and a worker
that cannot renew kills its sandbox before its lease runs out. SIGTERM or
SIGINT: finish the runs in hand, then exit. See docs/scaling.md.

examples:
  sandbox worker --broker redis://10.0.0.2:6379/0
  sandbox worker --broker redis://10.0.0.2:6379/0 --concurrency 4 --queues gpu
"""

QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_broker(url: str) -> str:
    """A redis:// or rediss:// URL, or InputError (one line)."""
    from sandbox.errors import InputError
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise InputError(f"--broker {url!r}: give a Redis URL, e.g. redis://127.0.0.1:6379/0")
    try:
        import dramatiq  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise InputError(f"--broker needs the 'scale' extra (pip install 'sandbox[scale]'): "
                         f"{exc}") from None
    return url


def _queues(text: str) -> tuple[str, ...]:
    names = tuple(q.strip() for q in text.split(",") if q.strip())
    bad = [q for q in names if not QUEUE_RE.match(q)]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"{text!r}: give queue names separated by commas "
                                         "(letters, digits, _ . -), e.g. default,gpu")
    return names


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run sandboxes for a `sandbox serve --broker`",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker", required=True, metavar="redis://HOST:PORT/DB",
                   help="the Redis the server dispatches through")
    p.add_argument("--concurrency", type=_positive, default=os.cpu_count() or 1, metavar="N",
                   help="sandboxes at once on this host (default: the number of CPUs)")
    p.add_argument("--queues", type=_queues, default=("default",), metavar="Q[,Q...]",
                   help="queues to take runs from (a run's `queue` label; default: default)")
    p.add_argument("--state", default=None, metavar="DIR",
                   help="this worker's state directory (default $SANDBOX_HOME/worker)")
    p.add_argument("--host-name", default=socket.gethostname(), metavar="NAME",
                   help="the name runs record as their host (default: the host name)")
    p.add_argument("--heartbeat", type=age_arg, default=15.0, metavar="SECONDS",
                   help="Dramatiq's dead-worker timeout for prefetched messages "
                        "(default 15s)")
    p.add_argument("--allow-root", action="store_true", help="run sandboxes as root (warns)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sandbox.errors import InputError
    check_broker(args.broker)
    if os.geteuid() == 0:
        if not args.allow_root:
            raise InputError("refusing to run as root: give --allow-root (every sandbox "
                             "would be started by root's launcher)")
        print("sandbox worker: warning: running as root (--allow-root)", file=sys.stderr)
    from sandbox.launcher.prepare import state_dir
    from sandbox.service.scaleout.worker import WorkerConfig, serve
    config = WorkerConfig(broker=args.broker,
                          state=args.state or os.path.join(state_dir(), "worker"),
                          host=args.host_name, concurrency=args.concurrency,
                          queues=args.queues, heartbeat_ms=int(args.heartbeat * 1000))
    try:
        return serve(config)
    except ConnectionError as exc:
        raise InputError(f"cannot reach the broker {args.broker}: {exc}") from None
