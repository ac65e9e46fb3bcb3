"""`sandbox serve`: the execution service over HTTP (docs/service.md)."""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from sandbox.cli.common import age_arg

HELP = """\
Serve the /v1 API (docs/service.md) on uvicorn: runs submitted over HTTP are
persisted in the state directory (SQLite, WAL), queued, and run in fresh
sandboxes by the local launcher. The first start makes an admin token and
writes it 0600 to STATE/admin.token. OpenAPI: http://LISTEN/docs.

A non-loopback address needs --tls-cert/--tls-key (or --insecure).
Running as root needs --allow-root, or --user NAME to drop to that user.

examples:
  sandbox serve
  sandbox serve --listen 127.0.0.1:8700 --state /var/lib/sandbox-service
  sandbox serve --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem
"""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, e.g. 127.0.0.1:8700")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, e.g. 127.0.0.1:8700")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API for sandboxed runs",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8700),
                   metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8700)")
    p.add_argument("--state", default=None, metavar="DIR",
                   help="state directory (default $SANDBOX_HOME/service, made 0700)")
    p.add_argument("--max-concurrent", type=int, default=8, metavar="N",
                   help="sandboxes running at once, every token together (default 8)")
    p.add_argument("--max-queued", type=int, default=10000, metavar="N",
                   help="queued runs, every token together (default 10000)")
    p.add_argument("--max-body", type=int, default=64 * 1024 * 1024, metavar="BYTES",
                   help="largest request body (default 64 MiB; 413 above)")
    p.add_argument("--retain", type=age_arg, default=None, metavar="AGE",
                   help='keep finished runs this long, e.g. "7d" (default: forever)')
    p.add_argument("--tls-cert", metavar="PEM")
    p.add_argument("--tls-key", metavar="PEM")
    p.add_argument("--insecure", action="store_true",
                   help="allow plain HTTP on a non-loopback address")
    p.add_argument("--user", metavar="NAME", default=None,
                   help="started as root: delegate a cgroup subtree to NAME, hand it the "
                   "state directory, then serve as NAME")
    p.add_argument("--allow-root", action="store_true", help="serve as root (warns)")
    p.add_argument("--broker", metavar="redis://HOST:PORT/DB", default=None,
                   help="hand runs to `sandbox worker` processes through Dramatiq on this "
                        "Redis instead of running them here (docs/scaling.md)")
    p.add_argument("--lease", type=age_arg, default=10.0, metavar="SECONDS",
                   help="with --broker: a worker's lease on a run; a worker silent this "
                        "long is declared lost (default 10s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sandbox.errors import InputError
    host, port = args.listen
    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("give both --tls-cert and --tls-key, or neither")
    tls = args.tls_cert is not None
    if not tls and not is_loopback(host) and not args.insecure:
        raise InputError(f"refusing to serve plain HTTP on {host}, which is not a loopback "
                         "address: give --tls-cert and --tls-key (or --insecure)")
    if args.max_concurrent < 1 or args.max_queued < 0 or args.max_body < 1024:
        raise InputError("--max-concurrent must be >= 1, --max-queued >= 0, "
                         "--max-body >= 1024")
    if args.broker is not None:
        from sandbox.cli.worker_cmd import check_broker
        check_broker(args.broker)
    from sandbox.service.config import default_state   # every CLI start imports this module
    state = args.state or default_state()
    if args.user is not None:
        if os.geteuid() != 0:
            raise InputError("--user needs to be started as root (it drops to that user)")
        if args.state is None:
            raise InputError("--user needs --state DIR (a directory for that user's "
                             "service, e.g. /var/lib/sandbox-service)")
        from sandbox.service.privdrop import become
        become(args.user, state)
    elif os.geteuid() == 0:
        if not args.allow_root:
            raise InputError("refusing to serve as root: give --user NAME to drop to an "
                             "unprivileged user, or --allow-root (every sandbox would be "
                             "started by root's launcher)")
        print("sandbox serve: warning: serving as root (--allow-root)", file=sys.stderr)
    try:
        import uvicorn
        from sandbox.service.app import create_app
        from sandbox.service.config import ServiceConfig
    except ImportError as exc:
        raise InputError(f"the service needs the 'service' extra "
                         f"(pip install 'sandbox[service]'): {exc}") from None
    config = ServiceConfig(state=state, host=host, port=port,
                           max_concurrent=args.max_concurrent, max_queued=args.max_queued,
                           max_body=args.max_body, retain=args.retain,
                           broker=args.broker, lease_ms=int(args.lease * 1000))
    app = create_app(config)
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    print(f"sandbox serve: {scheme}://{shown}:{port}/ (state {config.state}; admin token in "
          f"{app.state.service.admin_file})", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key,
                                           access_log=False, lifespan="on"))
    server.run()
    return 0
