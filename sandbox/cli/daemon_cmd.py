"""`sandbox daemon start|stop|status`: the per-user daemon behind a thin `sandbox exec`."""
from __future__ import annotations

import argparse
import os
import sys

HELP = """\
A per-user daemon that keeps the CLI warm: while it runs, `sandbox exec` hands
it its stdin, stdout, stderr, working directory and environment over a 0600
socket in a 0700 directory of yours (<state>/daemon/sock-<install id>) and the
run skips Python's imports of the CLI. Everything else about `sandbox exec` is
the same (exit codes, stdin, -t, signals, the environment allowlist). Without
a daemon, or with SANDBOX_DAEMON=0, `sandbox exec` starts cold as before. A
daemon serves only its own install's `sandbox exec`, and restarts itself when
that install's code changes (runs in flight finish first).

  start    start it (detached; prints its status)
  stop     stop it (runs in flight finish first)
  status   print whether it runs (exit 0) or not (exit 3)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("daemon", help="the per-user daemon for a fast sandbox exec",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.set_defaults(func=run)


def readable(line: str) -> str:
    """The daemon's status line for a person: `since EPOCH` as a local time and uptime
    (the line itself stays the daemon's, for scripts and the tests)."""
    import re
    import time

    def when(m: re.Match[str]) -> str:
        t = int(m.group(1))
        up = max(0, int(time.time()) - t)
        return (f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t))} "
                f"(up {up // 3600}h{up % 3600 // 60:02d}m)")
    return re.sub(r"since (\d+)", when, line.rstrip("\n"))


def run(args: argparse.Namespace) -> int:
    from sandbox.thin import control, wire
    path = wire.socket_path(os.environ)
    if args.action == "status":
        line = control.status(path)
        print(readable(line) if line else f"not running ({path})")
        return 0 if line else 3
    if args.action == "stop":
        if not control.stop(path):
            print(f"not running ({path})")
            return 0
        print("stopped")
        return 0
    try:
        print(readable(control.start(os.environ)))
    except RuntimeError as exc:
        print(f"sandbox daemon: {exc}", file=sys.stderr)
        return 1
    return 0
