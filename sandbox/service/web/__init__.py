"""The web page of `sandbox serve`, under /ui (issue 19).

Server-rendered HTML (Jinja2, autoescaped), one stylesheet and one script
shipped in the package (no CDN, no build step), a strict Content-Security-
Policy with no inline script or style, a token login with an HttpOnly,
SameSite=Strict session cookie, and a CSRF token on every POST. The page
reads and acts only through the service's /v1 API with the user's token
(bridge.py), so it can show and do nothing the token could not do itself.

The service mounts it with one line: `sandbox.service.web.mount(app)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from .common import PREFIX, LoginRequired, SecurityHeaders
from .session import Sessions

STATIC = Path(__file__).with_name("static")


def mount(app: Any) -> None:
    """Add the page's routes, its static files and its response headers to the
    service's FastAPI application."""
    from . import admin, audit, auth, runs, workers

    app.state.ui_sessions = Sessions()
    for module in (auth, runs, audit, admin, workers):
        app.include_router(module.router, prefix=PREFIX, include_in_schema=False)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_middleware(SecurityHeaders)

    async def to_login(request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(PREFIX + "/login", status_code=303)

    app.add_exception_handler(LoginRequired, to_login)
