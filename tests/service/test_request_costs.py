"""What a run's request costs the server after it was submitted, judged from the
server's state and its process's peak RSS.

Found by an attack probe (2026-12-06): `stdin_b64` was kept inside the run's
stored request, and every listing read whole rows back: eight runs of 64 MB
bodies made one `GET /v1/runs` push the server from 0.39 to 1.36 GB; another
tenant's `GET /v1/events` read the whole row of every run it saw an event of.
"""
from __future__ import annotations

import base64
import os
import sqlite3
import threading

import httpx
from service.helpers import make_token
from test_monitor_bounds import _hwm as _peak_rss

MiB = 1 << 20
STDIN = 8 * MiB
RUNS = 6


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as f:   # 5: reset the peak RSS
        f.write("5")


def test_stdin_is_not_kept_in_the_request_and_listings_stay_small(server):
    alice = make_token(server, "alice", "--max-queued", "50")
    bob = make_token(server, "bob")
    assert server.proc is not None
    pid = server.proc.pid
    tail = os.urandom(16)
    body = os.urandom(STDIN - len(tail)) + tail
    raw = base64.b64encode(body).decode()
    ids = []
    with server.client(alice) as c:
        for _ in range(RUNS):
            r = c.post("/v1/runs", json={"argv": ["sh", "-c", "tail -c 16 | od -An -tx1"],
                                         "stdin_b64": raw}, timeout=120)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        for i in ids:
            v = c.get(f"/v1/runs/{i}", params={"wait": 120}).json()
            assert v["status"] == "ok", v
            assert "".join(v["result"]["stdout"].split()) == tail.hex()   # it got its stdin

        # the stored request holds no stdin: the store has nothing that size
        db = sqlite3.connect(f"file:{server.state}/service.db?mode=ro", uri=True)
        longest = db.execute("SELECT MAX(LENGTH(request)) FROM runs").fetchone()[0]
        db.close()
        assert longest < 64 * 1024, longest

        # another tenant listens to every run's status while alice lists hers
        seen: list[bytes] = []

        def listen() -> None:
            try:
                with httpx.stream("GET", f"{server.url}/v1/events",
                                  headers=server.auth(bob), timeout=30) as s:
                    for chunk in s.iter_bytes():
                        seen.append(chunk)
            except httpx.HTTPError:
                pass     # the server stops at the end of the test
        t = threading.Thread(target=listen, daemon=True)
        t.start()
        _reset_peak(pid)
        base = _peak_rss(pid)
        for _ in range(4):
            got = c.get("/v1/runs", params={"limit": 50})
            assert got.status_code == 200 and len(got.json()["items"]) == RUNS
        for _ in range(3):
            c.post("/v1/runs", json={"argv": ["true"], "stdin_b64": raw[:4096]})
        grown = _peak_rss(pid) - base
        # the runs' stdin together is 48 MiB (64 MiB as base64): a listing that
        # read it back grew the server by more than that
        assert grown < 24 * MiB, grown


def test_secret_values_are_bounded_together(server):
    """Masking makes one pattern of a run's secret values; 256 values of 32 KiB
    (8 MiB) took seconds to make, so together they are bounded at submit."""
    with server.client() as c:
        big = {f"S{i}": "s" * 32000 for i in range(9)}
        r = c.post("/v1/runs", json={"argv": ["true"], "secret_env": big})
        assert r.status_code == 422 and "secret_env" in r.text and "262144" in r.text, r.text
        ok = c.post("/v1/runs", json={"argv": ["true"], "secret_env": dict(list(big.items())[:8])})
        assert ok.status_code == 202, ok.text
