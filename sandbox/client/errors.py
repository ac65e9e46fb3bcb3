"""Typed errors of the service client: one class per thing a caller does differently.

Each carries the HTTP status and the server's own reason (FastAPI's `detail`,
flattened to one line), so `except Forbidden as e: print(e.reason)` shows the
policy comparison that refused the run. The text is the server's: printed to a
terminal it goes through `sandbox.printable` first (the CLI does that).
"""
from __future__ import annotations

import json
from typing import Any

from sandbox.errors import InputError, SandboxError


class ClientError(SandboxError):
    """The service refused a request or could not be reached."""
    status: int | None = None

    def __init__(self, reason: str, *, status: int | None = None,
                 detail: Any = None, retry_after: float | None = None) -> None:
        self.reason = reason
        if status is not None:
            self.status = status
        self.detail = detail            # the server's `detail` as sent (str, list, dict)
        self.retry_after = retry_after  # seconds, from Retry-After (429, 503)
        prefix = f"HTTP {self.status}: " if self.status else ""
        super().__init__(f"{prefix}{reason}")


class InvalidArgument(ClientError, InputError):
    """The caller's own arguments are wrong (checked before anything is sent)."""


class ConnectionFailed(ClientError):
    """No HTTP answer: the server is down, the address wrong, or it timed out."""


class BadRequest(ClientError):
    """400: the request could not be understood."""
    status = 400


class Unauthorized(ClientError):
    """401: no token, a wrong one, or a revoked one (SANDBOX_TOKEN / --token)."""
    status = 401


class Forbidden(ClientError):
    """403: over the token's ceiling (the reason names the rule), or another
    tenant's run."""
    status = 403


class NotFound(ClientError):
    """404: no such run, file or policy visible to this token."""
    status = 404


class Conflict(ClientError):
    """409: e.g. an idempotency key reused with a different request."""
    status = 409


class PayloadTooLarge(ClientError):
    """413: the request body (inputs, uploads) is over the server's limit."""
    status = 413


class ValidationFailed(ClientError):
    """422: a request field is invalid; the reason names it."""
    status = 422


class RateLimited(ClientError):
    """429: over the token's or the server's quota; `retry_after` says when to retry."""
    status = 429


class ServerError(ClientError):
    """5xx: the server failed; the request may or may not have taken effect
    (submit with an idempotency key to retry safely)."""


_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: ValidationFailed, 429: RateLimited,
}


def detail_text(detail: Any) -> str:
    """FastAPI's detail: a string, or (422) a list of {loc, msg}: one line naming fields.
    The web page (sandbox.service.web.bridge) shows the same line."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, dict):
        return str(detail.get("reason") or detail.get("message") or json.dumps(detail))
    return str(detail)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def from_response(status: int, body: bytes, headers: Any) -> ClientError:
    """The typed error for an HTTP error answer."""
    detail: Any = None
    try:
        parsed = json.loads(body)
        detail = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
    except (ValueError, UnicodeDecodeError):
        detail = body[:500].decode("utf-8", "replace")
    reason = " ".join(detail_text(detail).split())[:2000] or f"HTTP {status}"
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ClientError)
    return cls(reason, status=status, detail=detail,
               retry_after=_retry_after(headers.get("retry-after")))
