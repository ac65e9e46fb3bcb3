"""The FastAPI application: `create_app(config)` builds one service on a state directory.

Routes live in sandbox.service.routes_*, and what they depend on (the service,
the caller's token) in sandbox.service.deps; this module wires the shared parts
(store, event bus, queue, launcher), authentication, the body-size limit and
the mapping of typed errors to HTTP statuses:

    InputError          422 {"detail": "<field or reason>: ..."}
    auth.Unauthorized   401 (WWW-Authenticate: Bearer)
    tenancy.Forbidden   403 {"detail": "<the policy comparison's reason>"}
    QuotaExceeded       429 (Retry-After)
    body too large      413
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import sandbox
from sandbox.errors import InputError
from sandbox.service import (auth, routes_admin, routes_events, routes_files, routes_runs,
                             routes_workers, tenancy)
from sandbox.service.config import ServiceConfig, prepare_state
from sandbox.service.deps import NotFound, Service, Unauthorized
from sandbox.service.events import Bus
from sandbox.service.queue import RunQueue
from sandbox.service.runs import QuotaExceeded, Runs
from sandbox.service.store import Store

log = logging.getLogger("sandbox.service")


class BodyLimit:
    """413 for a request body over `limit` bytes: by Content-Length before
    reading, and by counting for a chunked one (the handler never sees more)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        seen = 0
        limit = self.limit

        async def counted() -> Any:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return msg
        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = b'{"detail":"request body too large (over %d bytes)"}' % self.limit
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def build_service(config: ServiceConfig) -> Service:
    config.state = prepare_state(config.state)
    store = Store(config.db_path)
    admin_file = auth.ensure_admin(store, config.state)
    bus = Bus(store)
    runs = Runs(store, bus, config)
    queue: Any
    if config.broker:    # scale-out: the same interface, Dramatiq workers as executors
        from sandbox.service.scaleout.dispatch import BrokerQueue
        queue = BrokerQueue(store, bus, config, config.broker, lease_ms=config.lease_ms)
    else:
        queue = RunQueue(store, bus, config, runs.execute)
        runs.nested_gate = queue.nested_gate
    from sandbox.service.metrics import Metrics
    from sandbox.service.ratelimit import RateLimiter
    metrics = Metrics(store, queue.running_count)
    runs.metrics = metrics
    if config.broker:
        queue.reports.metrics = metrics     # remote runs end where their reports land
    from sandbox.service.revocation import Revocations
    from sandbox.service.streamslots import MAX_LARGE, StreamSlots
    return Service(config=config, store=store, bus=bus, runs=runs, queue=queue,
                   admin_file=admin_file, rate=RateLimiter(), metrics=metrics,
                   revocations=Revocations(store, bus, queue), streams=StreamSlots(),
                   large=StreamSlots(MAX_LARGE, "large answers (over 1 MiB)"),
                   building=StreamSlots(MAX_LARGE, "answers being made"))


def create_app(config: ServiceConfig) -> FastAPI:
    svc = build_service(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio
        from sandbox.launcher.launcher import Launcher
        svc.bus.bind(asyncio.get_running_loop())
        svc.launcher = Launcher(max_concurrent=config.max_concurrent,
                                audit_db=config.audit_dir, history=False,
                                capture_output=True)
        svc.runs.launcher = svc.launcher
        from sandbox.service.retention import SETTING, Reaper
        svc.store.set_setting(SETTING, None if config.retain is None else repr(config.retain))
        reaper = Reaper(svc.store, config)
        reaper.start()
        requeued, lost = svc.queue.start()
        if requeued or lost:
            log.warning("recovered after a restart: %d run(s) re-queued, %d lost",
                        len(requeued), len(lost))
        svc.revocations.start()
        try:
            yield
        finally:
            svc.revocations.stop()
            reaper.stop()
            await asyncio.get_running_loop().run_in_executor(None, svc.queue.stop)
            await asyncio.get_running_loop().run_in_executor(None, svc.launcher.close)
            svc.store.close()

    app = FastAPI(title="sandbox service", version=sandbox.__version__, lifespan=lifespan,
                  description="Sandboxed runs over HTTP (docs/service.md).")
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=config.max_body)   # type: ignore[arg-type]

    @app.exception_handler(Unauthorized)
    async def _401(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(tenancy.Forbidden)
    async def _403(request: Request, exc: tenancy.Forbidden) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(NotFound)
    async def _404(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(QuotaExceeded)
    async def _429(request: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=429,
                            headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(InputError)
    async def _422(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RecursionError)
    async def _deep(request: Request, exc: RecursionError) -> JSONResponse:
        # JSON nested deeper than the decoder follows ([[[[...]]]] 100,000 deep): the
        # client's input, not the server's failure (it was a 500)
        return JSONResponse({"detail": "body: JSON nested too deeply to read"},
                            status_code=422)

    app.include_router(routes_runs.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_events.router)
    app.include_router(routes_files.router)
    app.include_router(routes_workers.router)
    _document_bodies(app)
    from sandbox.service import web   # the web page under /ui (issue 19)
    web.mount(app)
    return app


def _document_bodies(app: FastAPI) -> None:
    """Put the models of bodies a route reads itself (POST /v1/runs takes JSON or
    multipart) into the OpenAPI components, so /docs shows their schema."""
    from fastapi.openapi.utils import get_openapi
    from sandbox.service.models import RunRequest

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            extra = RunRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(extra.pop("$defs", {}))
            schemas["RunRequest"] = extra
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
