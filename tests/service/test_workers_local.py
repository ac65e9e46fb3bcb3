"""GET /v1/workers without a broker: the server's own executor, in the same
shape as a cluster's (so the workers page works on one machine too)."""
from __future__ import annotations


def test_the_local_executor_is_the_one_worker(server):
    with server.client() as c:
        v = c.get("/v1/workers").json()
    assert v["broker"] is False and v["leases"] == []
    assert len(v["workers"]) == 1 and v["workers"][0]["slots"] >= 1
    assert v["queues"] == [{"name": "local", "depth": 0}]
