"""Every non-admin token has a ceiling (probe2 finding 6).

`POST /v1/tokens` without a ceiling made a non-admin token with none: its runs
asked for `network.mode = "host"` and unlimited limits, reached the service and
its Redis, and read another tenant's secrets. Judged from the server: the
token made by each path, and the 403 for a run over `default`.
"""
from __future__ import annotations

import os
import sqlite3

import pytest

WIDE = {"name": "wide", "extends": ["default"], "network": {"mode": "host"},
        "limits": {"cpu": "unlimited", "memory": "unlimited"}}


def _over_default(server, token: str) -> int:
    with server.client(token) as c:
        return c.post("/v1/runs", json={"argv": ["true"], "policy_inline": WIDE}).status_code


def test_an_api_token_without_a_ceiling_gets_default(server, http) -> None:
    made = http.post("/v1/tokens", json={"name": "ivan"}).json()
    assert made["admin"] is False and made["ceiling"] == "default", made
    assert _over_default(server, made["token"]) == 403
    nulled = http.post("/v1/tokens", json={"name": "ivan2", "ceiling": None}).json()
    assert nulled["ceiling"] == "default", nulled


def test_an_old_row_without_a_ceiling_is_held_to_default(server, http) -> None:
    """A store row written before the rule (ceiling NULL, not admin) reads as `default`."""
    made = http.post("/v1/tokens", json={"name": "old", "ceiling": "default"}).json()
    db = sqlite3.connect(os.path.join(server.state, "service.db"))
    with db:
        db.execute("UPDATE tokens SET ceiling=NULL WHERE id=?", (made["id"],))
    db.close()
    listed = [t for t in http.get("/v1/tokens").json() if t["id"] == made["id"]]
    assert listed[0]["ceiling"] == "default", listed
    assert _over_default(server, made["token"]) == 403


def test_the_admin_keeps_no_ceiling(server, http) -> None:
    made = http.post("/v1/tokens", json={"name": "root2", "admin": True}).json()
    assert made["admin"] is True and made["ceiling"] is None


def test_the_executor_refuses_a_tenant_token_without_a_ceiling() -> None:
    """Fail closed where the run starts: a non-admin TokenRow with no ceiling (however
    it was made) is refused, never run unbounded."""
    from sandbox.service import tenancy
    from sandbox.service.store import TokenRow
    tok = TokenRow(id="tok_x", name="x", hash="", ceiling=None, max_concurrent=1,
                   max_queued=1, rate=None, admin=False, created_at=0.0, revoked_at=None)
    with pytest.raises(tenancy.Forbidden):
        tenancy.ceiling_name(tok)
    tok.admin = True
    assert tenancy.ceiling_name(tok) is None
