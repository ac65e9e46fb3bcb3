"""What a route handler depends on: the service, the caller's token, and the errors
the application maps to HTTP statuses (`sandbox.service.app.create_app`).

Apart from the application, so that the routes (sandbox.service.routes_*) take
these without importing the module that includes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandbox.service import auth, tenancy
from sandbox.service.config import ServiceConfig
from sandbox.service.events import Bus
from sandbox.service.runs import Runs
from sandbox.service.store import Store, TokenRow


class Unauthorized(Exception):
    pass


class NotFound(Exception):
    pass


@dataclass
class Service:
    """Everything a request handler needs (app.state.service)."""
    config: ServiceConfig
    store: Store
    bus: Bus
    runs: Runs
    queue: Any          # RunQueue, or scaleout.dispatch.BrokerQueue with --broker
    admin_file: str
    launcher: Any = None
    rate: Any = None     # sandbox.service.ratelimit.RateLimiter
    metrics: Any = None  # sandbox.service.metrics.Metrics
    revocations: Any = None  # sandbox.service.revocation.Revocations
    streams: Any = None     # sandbox.service.streamslots.StreamSlots: held requests
    large: Any = None       # and answers over streamslots.LARGE_BODY in flight
    building: Any = None    # and answers being made

    def rate_check(self, tok: TokenRow) -> None:
        if self.rate is not None:
            self.rate.check(tok)

    def token_name(self, token_id: str) -> str:
        tok = self.store.token(token_id)
        return tok.name if tok is not None else "(deleted)"


_bearer = HTTPBearer(auto_error=False)


async def service(request: Request) -> Service:
    """The app's service. `async`: FastAPI runs a plain function dependency in its thread
    pool, a trip on every request for one attribute."""
    return request.app.state.service   # type: ignore[no-any-return]


def current_token(request: Request,
                  creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> TokenRow:
    svc: Service = request.app.state.service
    tok = auth.lookup(svc.store, creds.credentials if creds is not None else None)
    if tok is None:
        raise Unauthorized("a valid bearer token is required (Authorization: Bearer sbx_...)")
    return tok


def admin_token(tok: TokenRow = Depends(current_token)) -> TokenRow:
    if not tok.admin:
        raise tenancy.Forbidden("this needs the admin token")
    return tok
