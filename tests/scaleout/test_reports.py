"""The server's report stream as one run's worker (or anyone who can write to Redis)
may fill it: a report the server cannot apply is refused, acknowledged and said
in the run's events, and the stream goes on with every other run's reports.

Found by an attack probe: a run that wrote a file 17 directories deep (or a
name with a control character) made the server retry that one entry twice a
second, for ever and across restarts; no other worker's report was applied.
"""
from __future__ import annotations

import json
import time

import pytest

from scaleout.test_delivery import events
from scaleout.test_dispatch import wait_final

pytestmark = pytest.mark.redis


def test_an_output_name_the_server_refuses_does_not_stop_other_runs(broker_server,
                                                                     start_worker):
    start_worker("alpha")
    script = ('d="$SANDBOX_OUTPUT"; for i in $(seq 1 17); do d="$d/d"; done; '
              'mkdir -p "$d" && echo deep > "$d/f"; '
              'printf x > "$SANDBOX_OUTPUT/$(printf "a\\001b")"; echo fine > "$SANDBOX_OUTPUT/ok"')
    with broker_server.client() as c:
        bad = c.post("/v1/runs", json={"argv": ["sh", "-c", script], "policy": "default"})
        assert bad.status_code == 202, bad.text
        v = wait_final(c, bad.json()["id"], timeout=90)
        after = c.post("/v1/runs", json={"argv": ["echo", "after"], "policy": "strict"})
        w = wait_final(c, after.json()["id"], timeout=90)
        assert (w["status"], w["result"]["stdout"]) == ("ok", "after\n"), w
        assert v["status"] == "ok", v
        paths = [i["path"] for i in c.get(f"/v1/runs/{v['id']}/files").json()["items"]]
        assert "ok" in paths and not any("\x01" in p or p.count("/") >= 16 for p in paths)
        # the tenant is told which files did not come back, and why
        refused = [json.loads(d) for _, t, d in events(c, v["id"]) if t == "refused"]
        why = " ".join(r["reason"] for r in refused)
        assert "control characters" in why and "at most 16 levels" in why, refused


def test_forged_reports_are_refused_and_the_stream_moves_on(broker_server, start_worker,
                                                           redis_server):
    """Reports written straight to the stream, as a host with Redis access could:
    every kind that raised anything but InputError wedged the stream."""
    import redis
    from sandbox.service.scaleout import keys
    start_worker("alpha")
    r = redis.Redis.from_url(redis_server.url)
    with broker_server.client() as c:
        run = c.post("/v1/runs", json={"argv": ["sh", "-c", "sleep 4; echo done"],
                                       "policy": "strict"}).json()["id"]
        deadline = time.monotonic() + 60
        while not c.get(f"/v1/runs/{run}").json()["host"]:
            assert time.monotonic() < deadline, "the run's start"
            time.sleep(0.1)
        deep = "/".join(["d"] * 17)
        forged = [
            {"type": "file", "data": {"path": deep, "offset": 0, "last": True, "b64": ""}},
            {"type": "file", "data": {"path": "x", "offset": "nope", "last": True}},
            {"type": "file", "data": {"path": "y", "offset": 0, "last": False, "b64": "a"}},
            {"type": "file", "data": {"path": "z", "offset": 0, "last": True, "size": "big"}},
            {"type": "finish", "data": {"status": "ok", "finished_at": "soon"}},
            {"type": "audit_file", "data": {"run": "x", "offset": {}, "last": True}},
        ]
        for f in forged:
            rep = {"run_id": run, "attempt": 1, "host": "alpha", "at": time.time(), **f}
            r.xadd(keys.REPORTS, {"r": json.dumps(rep)})
        after = c.post("/v1/runs", json={"argv": ["echo", "after"], "policy": "strict"})
        w = wait_final(c, after.json()["id"], timeout=90)
        assert (w["status"], w["result"]["stdout"]) == ("ok", "after\n"), w
        v = wait_final(c, run, timeout=90)
        assert (v["status"], v["result"]["stdout"]) == ("ok", "done\n"), v
        refused = [json.loads(d) for _, t, d in events(c, run) if t == "refused"]
        assert len(refused) == len(forged), refused
        assert not r.xpending(keys.REPORTS, keys.GROUP)["pending"]
