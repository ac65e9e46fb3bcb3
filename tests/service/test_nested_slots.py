"""A service run's nested spawns count against its token's concurrency (probe2 finding 3).

A `max_concurrent = 1` token's workflow fanned out 8 `ctx.spawn` children that
took every launcher slot of the server (another tenant's `echo` waited 34 s),
while `/healthz` said `running: 1`. Judged from the runs themselves: each
child records when its sandbox ran, and the overlap of those intervals is how
many of the token's sandboxes ran at once.
"""
from __future__ import annotations

import base64
import threading
import time

from service.helpers import make_token

ACTIONS = b'''
import threading, time
from sandbox.workflow import action

@action("nap")
def nap(ctx):
    ctx.store.put("t0", time.time())
    time.sleep(ctx.params.get("s", 3))
    ctx.store.put("t1", time.time())

@action("fan")
def fan(ctx):
    n = ctx.store.get_int("children")
    child = {"id": "c", "name": "c", "imports": ["fan_actions"],
             "stages": [{"id": "s", "actions": [{"name": "nap", "params": {"s": 3}}]}]}
    got = []
    def one():
        got.append(ctx.spawn(child))
    ts = [threading.Thread(target=one) for _ in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    ctx.store.put("spans", [[r["store"]["t0"], r["store"]["t1"]] for r in got
                            if r.get("status") == "ok"])
'''


def _fan(c, children: int) -> str:
    wf = {"id": "fan", "name": "fan", "imports": ["fan_actions"],
          "store": {"children": children}, "stages": [{"id": "s", "actions": ["fan"]}]}
    r = c.post("/v1/runs", json={"workflow": wf, "files": [
        {"name": "fan_actions.py", "content_b64": base64.b64encode(ACTIONS).decode()}]})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _most_at_once(spans: list[list[float]]) -> int:
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


def _final(c, run_id: str) -> dict:
    deadline = time.monotonic() + 300
    while True:
        v = c.get(f"/v1/runs/{run_id}", params={"wait": 10}).json()
        if v["status"] not in ("queued", "running"):
            return v
        assert time.monotonic() < deadline, v


def test_nested_spawns_count_against_the_tokens_concurrency(start_server) -> None:
    server = start_server("--max-concurrent", "4")
    one = make_token(server, "frank", "--max-concurrent", "1")
    three = make_token(server, "gina", "--max-concurrent", "3")
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with server.client() as h:
            while not stop.is_set():
                seen.append(int(h.get("/healthz").json()["running"]))
                time.sleep(0.1)
    with server.client(one) as c:
        v = _final(c, _fan(c, 4))
    assert v["status"] == "ok", v
    spans = v["result"]["store"]["spans"]
    assert len(spans) == 4, v["result"]["store"]
    assert _most_at_once(spans) == 1, spans     # one slot: the run's own, lent in turn
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        with server.client(three) as c:
            v = _final(c, _fan(c, 4))
    finally:
        stop.set()
        t.join()
    assert v["status"] == "ok", v
    spans = v["result"]["store"]["spans"]
    assert len(spans) == 4 and _most_at_once(spans) == 3, spans
    assert max(seen) == 3, seen                # /healthz counts the nested sandboxes
