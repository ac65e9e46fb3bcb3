"""Bearer tokens: made here, stored hashed, checked on every request.

A token is `sbx_` + 32 random bytes (url-safe base64). Only its SHA-256 is
stored: a leaked store does not hand out working tokens, and a plain hash is
enough for a secret of 256 random bits (no dictionary to defend against).
The admin token is made on the first start and written 0600 to the state
directory, beside the store; it sees every run and manages tokens.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

from sandbox.service.store import Store, TokenRow

PREFIX = "sbx_"
ADMIN_FILE = "admin.token"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_token(store: Store, *, name: str, ceiling: str | None, max_concurrent: int,
              max_queued: int, rate: float | None, admin: bool,
              queues: list[str] | None = None) -> tuple[str, TokenRow]:
    """(the secret, shown once, and its stored row)."""
    secret = PREFIX + secrets.token_urlsafe(32)
    row = TokenRow(id="tok_" + secrets.token_hex(8), name=name, hash=digest(secret),
                   ceiling=ceiling, max_concurrent=max_concurrent, max_queued=max_queued,
                   rate=rate, admin=admin, created_at=time.time(), revoked_at=None,
                   queues=queues)
    store.add_token(row)
    return secret, row


def lookup(store: Store, secret: str | None) -> TokenRow | None:
    """The live token this secret is, or None (unknown, revoked, malformed)."""
    if not secret or not secret.startswith(PREFIX) or len(secret) > 256:
        return None
    want = digest(secret)
    row = store.token_by_hash(want)
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.hash, want) else None


def ensure_admin(store: Store, state: str) -> str:
    """The admin token's file path; made (with the token) on the first start.

    The file is created O_EXCL 0600 without following a link; when it exists
    but its token is gone from the store (a new store), a fresh one replaces it."""
    path = os.path.join(state, ADMIN_FILE)
    if os.path.lexists(path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd) as f:
                if lookup(store, f.read().strip()) is not None:
                    os.chmod(path, 0o600)
                    return path
        except OSError:
            pass
        os.unlink(path)
    secret, _ = new_token(store, name="admin", ceiling=None, max_concurrent=1024,
                          max_queued=100000, rate=None, admin=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return path
