"""What `sandbox submit` and `sandbox runs --server` share: the --server/--token
options, the client they make, and the exec-style reading of a finished run.

Everything the server or the run sent that reaches the terminal here goes
through `printable` (one line, no control characters), except the program's
own stdout and stderr under --follow, which pass through untouched exactly as
`sandbox exec` passes them."""
from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.client.sync import Client
    from sandbox.service.models import RunView


def add_server_options(p: argparse.ArgumentParser, *, env_default: bool = True,
                       suppress: bool = False) -> None:
    """--server/--token. `env_default`: SANDBOX_SERVER stands in for --server (not for
    `sandbox runs`, where no --server means the local history). `suppress`: a
    sub-action's copy that does not reset what the parent parser already read
    (`sandbox runs --server URL list`)."""
    default = argparse.SUPPRESS if suppress else None
    p.add_argument("--server", metavar="URL", default=default,
                   help="the service's URL (default: $SANDBOX_SERVER)" if env_default else
                   "act on this service's runs instead of the local history")
    p.add_argument("--token", metavar="TOKEN", default=default,
                   help="bearer token (default: $SANDBOX_TOKEN; prefer the variable: "
                        "an argument is visible in ps)")


def client(args: argparse.Namespace) -> "Client":
    from sandbox.client.sync import Client
    return Client(getattr(args, "server", None), getattr(args, "token", None))


def as_result(view: "RunView") -> SimpleNamespace:
    """The fields sandbox.cli.common's exit-code table reads, from a finished RunView
    (`lost` has no RunResult: the service's reason, exit 125 like a sandbox that
    failed before the program ran)."""
    res: dict[str, Any] = view.result or {}
    status = view.status if view.status != "lost" else "setup_error"
    return SimpleNamespace(status=status, reason=res.get("reason") or view.reason or "",
                           exit_code=res.get("exit_code"), signal=res.get("signal"),
                           hints=res.get("hints") or [])


def dump_json(view: "RunView") -> str:
    """A run as JSON for a terminal or a pipe: ASCII only, so a C1 control (U+009B is a
    one-byte CSI) or a bidi override the run printed is an escape, not a byte
    (pydantic's own model_dump_json writes them raw)."""
    import json
    return json.dumps(view.model_dump(mode="json"), indent=2)


def say(text: str) -> None:
    from sandbox.printable import printable
    print(f"sandbox: {printable(text)}", file=sys.stderr)


def write_stream(stream: str, text: str) -> None:
    """A chunk of the program's stdout/stderr, passed through as the program wrote it."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.buffer.write(text.encode("utf-8", "surrogateescape"))
    out.buffer.flush()
