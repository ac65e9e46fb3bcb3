"""Revocation reaches runs already handed to the broker (probe2 finding 5).

A revoked token's second run, dispatched to Redis behind its first, started on
the worker 6 s after the revocation and ended `ok`: the worker's stand-in store
said the token was never revoked. Now the server cancels every dispatched and
running run of the token (their cancel key), so the worker drops the one it has
not started and kills the one it runs.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from service.helpers import make_token

from .test_dispatch import wait_final

pytestmark = pytest.mark.redis


def test_a_revoked_tokens_dispatched_runs_never_start(broker_server, start_worker):
    start_worker("alpha", "--concurrency", "1")
    tok = make_token(broker_server, "carol", "--max-concurrent", "2")
    with broker_server.client(tok) as c:
        first = c.post("/v1/runs", json={"argv": ["sleep", "60"]}).json()["id"]
        second = c.post("/v1/runs", json={"argv": ["echo", "I-RAN-AFTER-REVOCATION"]}
                        ).json()["id"]
    with broker_server.client() as admin:
        deadline = time.monotonic() + 60     # the first runs on the worker, the second waits
        while True:                          # in Redis behind it (dispatched, no host)
            a, b = (admin.get(f"/v1/runs/{i}").json() for i in (first, second))
            if a["host"] == "alpha" and b["status"] == "running":
                break
            assert time.monotonic() < deadline, (a, b)
            time.sleep(0.1)
        subprocess.run([sys.executable, "-m", "sandbox", "token", "--state",
                        broker_server.state, "revoke", "carol"], check=True,
                       capture_output=True, timeout=120)
        a, b = wait_final(admin, first), wait_final(admin, second)
    assert a["status"] == "cancelled", a
    assert b["status"] == "cancelled", b
    assert "I-RAN" not in str(b.get("result")), b
