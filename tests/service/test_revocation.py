"""Revoking a token ends what it started (probe2 findings 5 and 10).

The rule (docs/service.md, Tokens): its queued runs end `cancelled` without
starting, its running runs are cancelled (killed), and its open event streams
close, whether the admin revoked it through the API or `sandbox token revoke`
edited the store while the server ran. Before, an event stream opened before
the revocation kept delivering, and the running run went on to its end.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from service.helpers import make_token
from service.sse import read_events

TICKS = ["sh", "-c", "for i in $(seq 1 60); do echo tick $i; sleep 1; done"]
REVOKED = "the token that submitted it was revoked"


def wait_final(c: httpx.Client, run_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        v = c.get(f"/v1/runs/{run_id}", params={"wait": 5}).json()
        if v["status"] not in ("queued", "running"):
            return v
        assert time.monotonic() < deadline, v


def _follow(server, token: str, path: str, seen: list, done: threading.Event) -> None:
    try:
        with httpx.Client(base_url=server.url, headers=server.auth(token), timeout=120) as c:
            for ev in read_events(c, path, until=None):
                seen.append(ev)
    except Exception as exc:        # a stream cut is an end too
        seen.append(exc)
    finally:
        done.set()


def revoke(server, how: str, token_id: str, name: str) -> None:
    if how == "cli":       # edits the store while the server runs: the server must notice
        subprocess.run([sys.executable, "-m", "sandbox", "token", "--state", server.state,
                        "revoke", name], check=True, capture_output=True, timeout=120)
    else:
        with server.client() as c:
            assert c.delete(f"/v1/tokens/{token_id}").status_code == 200


@pytest.mark.parametrize("how", ["cli", "api"])
def test_revocation_ends_runs_and_closes_streams(server, how) -> None:
    secret = make_token(server, "eve", "--max-concurrent", "1")
    with server.client() as admin:
        tok_id = [t for t in admin.get("/v1/tokens").json() if t["name"] == "eve"][0]["id"]
    with server.client(secret) as c:
        running = c.post("/v1/runs", json={"argv": TICKS}).json()["id"]
        queued = c.post("/v1/runs", json={"argv": ["echo", "I-RAN-AFTER-REVOCATION"]}
                        ).json()["id"]
    run_seen: list = []
    all_seen: list = []
    run_done, all_done = threading.Event(), threading.Event()
    for path, seen, done in ((f"/v1/runs/{running}/events", run_seen, run_done),
                             ("/v1/events", all_seen, all_done)):
        threading.Thread(target=_follow, args=(server, secret, path, seen, done),
                         daemon=True).start()
    deadline = time.monotonic() + 60
    while not any(getattr(e, "event", "") == "stdout" for e in run_seen):
        assert time.monotonic() < deadline, run_seen
        time.sleep(0.1)
    revoke(server, how, tok_id, "eve")
    with server.client() as admin:
        first = wait_final(admin, running)
        second = wait_final(admin, queued)
    assert first["status"] == "cancelled", first
    assert "tick 60" not in (first["result"] or {}).get("stdout", "")
    assert (second["status"], second["reason"], second["started_at"]) == \
        ("cancelled", REVOKED, None), second
    # /v1/events never ends on its own: it closed because the token was revoked
    assert all_done.wait(60), all_seen
    assert run_done.wait(60), run_seen
    assert not [e for e in run_seen if getattr(e, "event", "") == "stdout"
                and "tick 60" in str(e.data)]
