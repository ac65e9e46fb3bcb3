"""The requests of the /v1 API and the reading of their answers, transport-free.

`Client` (httpx.Client) and `AsyncClient` (httpx.AsyncClient) share this module,
so the two can differ only in how they wait, never in what they send or how
they read it.
"""
from __future__ import annotations

import base64
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from sandbox.client import errors

PREFIX = "/v1"
ENV_SERVER = "SANDBOX_SERVER"
ENV_TOKEN = "SANDBOX_TOKEN"
DEFAULT_SERVER = "http://127.0.0.1:8700"


def settings(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server URL and token: arguments first, then SANDBOX_SERVER / SANDBOX_TOKEN."""
    url = url or os.environ.get(ENV_SERVER) or DEFAULT_SERVER
    token = token or os.environ.get(ENV_TOKEN) or None
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise errors.InvalidArgument(f"server URL {url!r}: expected http(s)://HOST[:PORT]")
    return url.rstrip("/"), token


def run_path(run_id: str, *rest: str) -> str:
    """/v1/runs/{id}/...; the id is quoted, so an id from elsewhere cannot
    reach another endpoint ("../tokens")."""
    tail = "".join("/" + r for r in rest)
    return f"{PREFIX}/runs/{urllib.parse.quote(str(run_id), safe='')}{tail}"


def file_path(run_id: str, name: str) -> str:
    """The download path of an output, its name's exact bytes percent-encoded."""
    return run_path(run_id, "files", urllib.parse.quote(os.fsencode(name), safe="/"))


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def submit_request(*, argv: list[str] | None = None, workflow: Any = None,
                   policy: str | dict[str, Any] | None = None, stdin: str | bytes | None = None,
                   env: dict[str, str] | None = None, secret_env: dict[str, str] | None = None,
                   files: dict[str, Any] | None = None, store: dict[str, Any] | None = None,
                   timeout: float | None = None, retries: int | None = None,
                   labels: dict[str, str] | None = None, idempotency_key: str | None = None,
                   wait: float | None = None) -> Request:
    """POST /v1/runs (RunRequest) for a program (argv) or a workflow (a JSON document).

    `policy` is a name, or a dict sent as `policy_inline`; `files` maps an input
    name to its bytes (or text), or to (bytes, "rx") for an executable."""
    if (argv is None) == (workflow is None):
        raise errors.InvalidArgument("give exactly one of argv (a program) or workflow")
    body: dict[str, Any] = {}
    if argv is not None:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise errors.InvalidArgument("argv: a non-empty list of strings")
        body["argv"] = list(argv)
    else:
        body["workflow"] = workflow
    if isinstance(policy, dict):
        body["policy_inline"] = policy
    elif policy is not None:
        body["policy"] = policy
    if isinstance(stdin, bytes):
        body["stdin_b64"] = base64.b64encode(stdin).decode()
    elif stdin is not None:
        body["stdin"] = stdin
    for key, value in (("env", env), ("secret_env", secret_env), ("store", store),
                       ("labels", labels)):
        if value:
            body[key] = dict(value)
    if files:
        body["files"] = [_file_input(name, data) for name, data in files.items()]
    if timeout is not None:
        body["timeout"] = timeout
    if retries is not None:
        body["retries"] = retries
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    params = {"wait": wait} if wait else {}
    return Request("POST", f"{PREFIX}/runs", params=params, json=body, headers=headers)


def _file_input(name: str, data: Any) -> dict[str, str]:
    mode = "r"
    if isinstance(data, tuple):
        data, mode = data
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray)) or mode not in ("r", "rx"):
        raise errors.InvalidArgument(f"files[{name!r}]: bytes or text, or (bytes, 'r'|'rx')")
    return {"name": name, "content_b64": base64.b64encode(bytes(data)).decode(), "mode": mode}


def check(status: int, body: bytes, headers: Any) -> None:
    if status >= 400:
        raise errors.from_response(status, body, headers)
