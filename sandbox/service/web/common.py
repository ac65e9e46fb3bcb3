"""What every page route shares: the templates, the headers of every /ui
response, the current session, CSRF checks and error pages."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders

from sandbox.printable import printable

from . import views
from .bridge import Api, ApiError, detail_text
from .session import COOKIE, Session, origin_ok, same_token

PREFIX = "/ui"

# No inline script, no inline style, nothing from another origin, no framing,
# no plugins, forms post only here. Event handlers planted in markup (if any
# ever got through the escaping) would not run either.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: under no-referrer Chromium sends
    # "Origin: null" on form posts, and the origin check needs the real one
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Pure ASGI middleware adding HEADERS to responses under /ui only. Every
    other path (the /v1 API, its event streams, request bodies and their size
    limit) passes through untouched: no wrapping of bodies or streams."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        static = path.startswith(PREFIX + "/static/")
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    if not (name == "cache-control" and static):
                        headers[name] = value
                if tls:
                    headers["strict-transport-security"] = "max-age=31536000"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def multiline(text: Any) -> str:
    """Program output for a <pre>: lines kept, every other control or invisible
    character (ESC sequences, CR, BEL, bidi overrides) shown as an escape."""
    if text is None:
        return ""
    return "\n".join(printable(line) for line in str(text).split("\n"))


templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
env = templates.env
env.autoescape = True
env.filters.update(p=printable, multiline=multiline, when=views.when, seconds=views.seconds,
                   size=views.size, ending=views.ending, what=views.what,
                   duration=lambda run: views.seconds(views.duration(run)),
                   q=lambda s: quote(str(s), safe=""))


class LoginRequired(Exception):
    pass


@dataclass
class Ctx:
    """The logged-in user on one request."""
    request: Request
    session: Session
    api: Api


def current(request: Request) -> Ctx:
    session = request.app.state.ui_sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired()
    return Ctx(request, session, Api(request.app, session.token))


async def posted(request: Request) -> tuple[Ctx, dict[str, str]]:
    """A state-changing request: logged in, same origin, the session's CSRF token."""
    ctx = current(request)
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    if not origin_ok(request) or not same_token(ctx.session.csrf, data.get("csrf")):
        raise HTTPException(403, "CSRF check failed: reload the page and try again")
    return ctx, data


def render(ctx: Ctx | None, request: Request, name: str, status: int = 200,
           **values: Any) -> HTMLResponse:
    values.setdefault("session", ctx.session if ctx else None)
    values.setdefault("prefix", PREFIX)
    return templates.TemplateResponse(request, name, values, status_code=status)


def api_error_page(ctx: Ctx, err: ApiError) -> Response:
    if err.status == 401:
        # the token was revoked since the login: the session ends with it
        ctx.request.app.state.ui_sessions.drop(ctx.session.sid)
        return RedirectResponse(PREFIX + "/login", status_code=303)
    return render(ctx, ctx.request, "error.html", status=err.status,
                  status_code=err.status, message=detail_text(err.detail))


def back(path: str, **params: str) -> RedirectResponse:
    """303 after a POST, to a page of ours only (the path is built here, never
    taken from the request)."""
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items() if v)
    return RedirectResponse(PREFIX + path + (("?" + query) if query else ""), status_code=303)
