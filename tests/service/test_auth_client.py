"""Issue 16 item 8, auth: 401 for no token or a wrong one, 403 over the ceiling
(with the comparison's reason), 429 over quota (with Retry-After), each as the
client's typed error, and nothing stored for a refused submit."""
from __future__ import annotations

import time

import httpx
import pytest
from service.helpers import client, make_token

from sandbox.client import errors
from sandbox.client.sync import Client


def test_401_without_or_with_a_wrong_token(server, monkeypatch):
    monkeypatch.delenv("SANDBOX_TOKEN", raising=False)
    assert httpx.get(f"{server.url}/v1/runs").status_code == 401
    with Client(server.url) as c, pytest.raises(errors.Unauthorized):
        c.submit(["true"])
    with Client(server.url, "sbx_" + "A" * 43) as c, pytest.raises(errors.Unauthorized):
        c.list()
    with Client(server.url, server.admin_token + "x") as c, pytest.raises(errors.Unauthorized):
        c.list()
    with client(server) as c:
        assert c.list().items == []          # nothing was stored


def test_403_over_the_ceiling_names_the_rule(server):
    tok = make_token(server, "ci", "--ceiling", "strict")
    with client(server, tok) as c:
        with pytest.raises(errors.Forbidden) as info:
            c.submit(["true"], policy="default")
        assert "strict" in info.value.reason
        with pytest.raises(errors.Forbidden):
            c.submit(["true"], policy={"name": "wide", "extends": ["default"]})
        assert c.list().items == []
        assert c.run(["true"]).policy == "strict"    # under the ceiling it runs


def test_429_over_quota_with_retry_after(server):
    tok = make_token(server, "small", "--max-concurrent", "1", "--max-queued", "1")
    with client(server, tok) as c:
        running = c.submit(["sleep", "30"])
        # the quota counts queued runs: the first must have left the queue (it was
        # still queued under load, and the second submit was the one refused)
        deadline = time.monotonic() + 60
        while c.get(running.id).status == "queued" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.get(running.id).status == "running"
        queued = c.submit(["sleep", "30"])
        with pytest.raises(errors.RateLimited) as info:
            c.submit(["true"])
        assert info.value.retry_after is not None and info.value.retry_after >= 0
        assert {r.id for r in c.list().items} == {running.id, queued.id}
        for r in (running, queued):
            c.cancel(r.id)
    rated = make_token(server, "rated", "--rate", "1/s")
    with client(server, rated) as c:
        with pytest.raises(errors.RateLimited):
            for _ in range(5):
                c.submit(["true"])
