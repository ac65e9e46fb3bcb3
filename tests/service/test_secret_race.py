"""A run with secret values never starts without them.

Found by an attack probe (2026-12-06): 3 of 200 runs with `secret_env`, submitted
50 ms apart, ended `lost` ("did not survive a restart of the server") with no
restart: an executor claimed the run between its insert into the store and the
registration of its secrets, and the secrets registered afterwards stayed in the
server's memory under a run that had ended.

The window is made wide here from outside, as any client could: bodies the
server parses on its event loop (then refuses) hold the loop, while another
tenant's short runs keep the executors looking for work.
"""
from __future__ import annotations

import threading

from service.helpers import make_token

RUNS = 60


def test_no_secret_run_is_claimed_before_its_secrets_are_there(start_server):
    server = start_server("--max-concurrent", "4")
    hank = make_token(server, "hank", "--max-queued", "1000", "--rate", "1000")
    filler = make_token(server, "filler", "--max-queued", "1000", "--max-concurrent", "2",
                        "--rate", "1000")
    stop = threading.Event()

    def hold_the_loop() -> None:
        body = '{"argv":["true"],"stdin_b64":"x","stdin":"' + "y" * (24 << 20) + '"}'
        with server.client(filler) as c:
            while not stop.is_set():
                c.post("/v1/runs", content=body, headers={"content-type": "application/json"})

    def keep_executors_busy() -> None:
        with server.client(filler) as c:
            while not stop.is_set():
                if c.get("/healthz").json()["queued"] < 4:
                    c.post("/v1/runs", json={"argv": ["true"], "policy": "strict"})

    helpers = [threading.Thread(target=f, daemon=True)
               for f in (hold_the_loop, hold_the_loop, keep_executors_busy)]
    for t in helpers:
        t.start()
    ids = []
    try:
        with server.client(hank) as c:
            for i in range(RUNS):
                r = c.post("/v1/runs", json={"argv": ["sh", "-c", 'test "$T" = "v-$0"', str(i)],
                                             "secret_env": {"T": f"v-{i}"}, "policy": "strict"})
                assert r.status_code == 202, r.text
                ids.append(str(r.json()["id"]))
    finally:
        stop.set()
    with server.client(hank) as c:
        ended = [c.get(f"/v1/runs/{i}", params={"wait": 120}).json() for i in ids]
    bad = [(v["status"], v["reason"]) for v in ended if v["status"] != "ok"]
    assert not bad, (len(bad), bad[:3])
