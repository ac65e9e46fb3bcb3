"""The Python client of `sandbox serve` (issue 16 item 5; docs/service.md).

    from sandbox.client import Client
    c = Client()                     # SANDBOX_SERVER (default http://127.0.0.1:8700), SANDBOX_TOKEN
    run = c.run(["echo", "hi"])      # a RunView; run.result is the RunResult dict
    async with AsyncClient() as ac: ...

Needs the `service` extra (httpx, pydantic): pip install 'sandbox[service]'.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox.client.errors import (BadRequest, ClientError, Conflict, ConnectionFailed, Forbidden,
                                   InvalidArgument, NotFound, PayloadTooLarge, RateLimited,
                                   ServerError, Unauthorized, ValidationFailed)

if TYPE_CHECKING:
    from sandbox.client.aio import AsyncClient
    from sandbox.client.files import UnsafePath
    from sandbox.client.sse import Event
    from sandbox.client.sync import Client

__all__ = ["AsyncClient", "BadRequest", "Client", "ClientError", "Conflict", "ConnectionFailed",
           "Event", "Forbidden", "InvalidArgument", "NotFound", "PayloadTooLarge", "RateLimited",
           "ServerError", "Unauthorized", "UnsafePath", "ValidationFailed"]

_LAZY = {"Client": "sandbox.client.sync", "AsyncClient": "sandbox.client.aio",
         "Event": "sandbox.client.sse", "UnsafePath": "sandbox.client.files"}


def __getattr__(name: str) -> object:
    """httpx is imported only when a client is made (`import sandbox.client.errors`
    stays cheap for the CLI's error handling)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox.client' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
