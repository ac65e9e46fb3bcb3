"""Log in with a token, log out."""
from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from .bridge import Api, ApiError
from .common import PREFIX, render
from .session import COOKIE, LOGIN_COOKIE, cookie_args, origin_ok, same_token

router = APIRouter()
MAX_TOKEN = 512


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse(PREFIX + "/runs", status_code=303)


def _login_page(request: Request, error: str = "", status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(32)
    response = render(None, request, "login.html", status=status, csrf=nonce, error=error)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, **cookie_args(request))
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


async def whoami(api: Api) -> tuple[str, bool]:
    """Check the token against the API; its name, and whether it is an admin.

    Every token may list its own runs (401 for a bad one); only an admin token
    may list tokens (403 otherwise)."""
    await api.get("/runs", limit=1)
    try:
        tokens = await api.get("/tokens")
    except ApiError as err:
        if err.status in (403, 404):
            return "", False
        raise
    items = tokens.get("items", tokens) if isinstance(tokens, dict) else tokens
    names = [t.get("name") for t in items if isinstance(t, dict) and t.get("admin")]
    return str(names[0] if len(names) == 1 else "admin"), True


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    token = str(form.get("token") or "").strip()
    if not origin_ok(request) or not same_token(request.cookies.get(LOGIN_COOKIE),
                                                str(form.get("csrf") or "")):
        return _login_page(request, "The form expired: try again.", status=403)
    if not token or len(token) > MAX_TOKEN:
        return _login_page(request, "Give a token.", status=400)
    try:
        name, admin = await whoami(Api(request.app, token))
    except ApiError as err:
        if err.status in (401, 403):
            return _login_page(request, "That token is not valid (or was revoked).", status=401)
        raise
    session = request.app.state.ui_sessions.create(token, name, admin)
    response = RedirectResponse(PREFIX + "/runs", status_code=303)
    response.set_cookie(COOKIE, session.sid, **cookie_args(request))
    response.delete_cookie(LOGIN_COOKIE, **cookie_args(request))
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    sessions = request.app.state.ui_sessions
    session = sessions.get(request.cookies.get(COOKIE))
    form = await request.form()
    if session is not None and origin_ok(request) and same_token(session.csrf,
                                                                  str(form.get("csrf") or "")):
        sessions.drop(session.sid)
    response = RedirectResponse(PREFIX + "/login", status_code=303)
    response.delete_cookie(COOKIE, **cookie_args(request))
    return response
