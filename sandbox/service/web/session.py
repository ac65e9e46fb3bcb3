"""Logging in with a token, the session cookie, and CSRF.

The browser never holds the API token after the login form: the server keeps
it in a session held in memory, and the browser gets a random session id in
a cookie that is HttpOnly (no script reads it), SameSite=Strict (no other
site's page sends it) and Secure when the page is served over TLS. A restart
of the server ends every session (log in again); nothing about a session is
written to disk.

Every state-changing request (POST) carries the session's CSRF token in a
form field, compared in constant time; the login form, which has no session
yet, is bound to a pre-login cookie the same way. Requests whose Origin names
another site are refused as well (defence in depth for browsers that send it).
"""
from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from fastapi import Request

COOKIE = "sbx_session"
LOGIN_COOKIE = "sbx_login"
COOKIE_PATH = "/ui"
IDLE_SECONDS = 8 * 3600
MAX_SESSIONS = 10_000
# sessions one token keeps (its browsers and tabs); a login past it ends that token's
# own oldest session: with only the server-wide bound, one tenant logging in 10,000
# times ended every other user's session, the admin's too (probe 2026-12-07)
SESSIONS_PER_TOKEN = 16


@dataclass
class Session:
    sid: str
    token: str
    name: str
    admin: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)


class Sessions:
    """Sessions by id, in memory; idle ones expire."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def create(self, token: str, name: str, admin: bool) -> Session:
        self._sweep()
        own = [s for s in self._by_id.values() if s.token == token]
        if len(own) >= SESSIONS_PER_TOKEN:
            self._by_id.pop(min(own, key=lambda s: s.last_seen).sid, None)
        if len(self._by_id) >= MAX_SESSIONS:
            oldest = min(self._by_id.values(), key=lambda s: s.last_seen)
            self._by_id.pop(oldest.sid, None)
        session = Session(sid=secrets.token_urlsafe(32), token=token, name=name, admin=admin)
        self._by_id[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_seen > IDLE_SECONDS:
            self._by_id.pop(sid, None)
            return None
        session.last_seen = now
        return session

    def drop(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for sid in [s.sid for s in self._by_id.values() if now - s.last_seen > IDLE_SECONDS]:
            self._by_id.pop(sid, None)


def is_tls(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_args(request: Request) -> dict:
    """Attributes of every cookie the page sets."""
    return {"httponly": True, "samesite": "strict", "secure": is_tls(request),
            "path": COOKIE_PATH}


def same_token(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(
        str(expected).encode(), str(given).encode())


def origin_ok(request: Request) -> bool:
    """A POST whose Origin (or, without it, Referer) is another site is refused.
    Browsers send Origin on POSTs; a missing one is left to the CSRF token."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    expected = f"{request.url.scheme}://{request.url.netloc}"
    return origin == expected or origin.startswith(expected + "/")
