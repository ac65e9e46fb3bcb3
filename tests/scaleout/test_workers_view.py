"""GET /v1/workers: who executes runs, read from the workers' heartbeats and
the leases in Redis; admin only."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.redis


def test_workers_queues_and_leases(broker_server, start_worker):
    start_worker("left", "--concurrency", "1")
    start_worker("right", "--concurrency", "3", "--queues", "default,gpu")
    with broker_server.client() as c:
        rid = c.post("/v1/runs", json={"argv": ["sleep", "20.5"],
                                       "policy": "default"}).json()["id"]
        deadline = time.monotonic() + 120
        while True:
            v = c.get("/v1/workers").json()
            hosts = {w["host"]: w for w in v["workers"]}
            leased = [lease for lease in v["leases"] if lease["run_id"] == rid
                      and lease["lease_ttl_ms"]]
            # the heartbeat follows the lease (it is sent on the next beat)
            if {"left", "right"} <= set(hosts) and leased and \
                    sum(w["running"] for w in hosts.values()) == 1:
                break
            assert time.monotonic() < deadline, v
            time.sleep(0.2)
        assert v["broker"] is True and v["lease_ms"] == 2000
        assert hosts["right"]["slots"] == 3 and hosts["right"]["queues"] == ["default", "gpu"]
        assert all(0 <= w["heartbeat_age_s"] < 10 for w in hosts.values())
        assert 0 < leased[0]["lease_ttl_ms"] <= 2000
        assert {q["name"] for q in v["queues"]} >= {"default"}
        tok = c.post("/v1/tokens", json={"name": "plain"}).json()["token"]
        assert broker_server.client(tok).get("/v1/workers").status_code == 403
        c.post(f"/v1/runs/{rid}/cancel")
