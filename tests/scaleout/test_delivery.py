"""Delivery you can state (issue 17 item 3), judged from outside: the server's
API, the processes on this host, and Redis.

- many runs across several workers: each ends once, none lost, none twice;
- a worker SIGKILLed mid-run: its sandboxes die with it, and only then is the
  run re-run on another worker (attempt 2, retries allowed) or ended `lost`;
- cancel reaches the remote worker and kills the sandbox;
- a Redis `kill -9` and restart mid-stream loses nothing acknowledged.
"""
from __future__ import annotations

import concurrent.futures
import subprocess
import time

import httpx
import pytest

from scaleout.test_dispatch import wait_final
from service.server import make_server

pytestmark = pytest.mark.redis


def sandboxed(marker: str) -> list[str]:
    """Pids of processes on this host whose command line holds `marker`."""
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
    return out.split()


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def events(c: httpx.Client, run_id: str, after: int = 0) -> list[tuple[int, str, str]]:
    text = c.get(f"/v1/runs/{run_id}/events", params={"after": after}).text
    out, seq, typ = [], 0, ""
    for line in text.splitlines():
        if line.startswith("id:"):
            seq = int(line[3:].strip())
        elif line.startswith("event:"):
            typ = line[6:].strip()
        elif line.startswith("data:"):
            out.append((seq, typ, line[5:].strip()))
    return out


def test_300_runs_on_three_workers_each_once(broker_server, start_worker):
    for host in ("w1", "w2", "w3"):
        start_worker(host, "--concurrency", "2")
    with broker_server.client() as c:
        def submit(i: int) -> str:
            r = c.post("/v1/runs", json={"argv": ["echo", f"n{i}"], "policy": "strict"})
            assert r.status_code == 202, r.text
            return str(r.json()["id"])
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            ids = list(pool.map(submit, range(300)))
        assert len(set(ids)) == 300
        views = [wait_final(c, i, timeout=600) for i in ids]
        bad = [v for v in views if v["status"] != "ok" or v["attempts"] != 1]
        assert not bad, bad[:3]
        assert [v["result"]["stdout"] for v in views] == [f"n{i}\n" for i in range(300)]
        hosts = {v["host"] for v in views}
        assert len(hosts) >= 2, hosts          # the work was shared
        for v in views[::30]:                  # each started once, ended once
            types = [t for _, t, _ in events(c, v["id"])]
            assert types.count("started") == 1 and types.count("exit") == 1, types


def test_a_killed_worker_is_rerun_elsewhere_or_lost(broker_server, start_worker):
    a = start_worker("doomed", "--concurrency", "2")
    with broker_server.client() as c:
        # with a secret: the retry on another worker gets it too (it was in the lost
        # message only, so attempt 2 ended "lost ... did not survive a restart")
        retry = c.post("/v1/runs", json={"argv": ["sh", "-c",
                                                  'sleep 4.317; test -n "$K" && echo second'],
                                         "secret_env": {"K": "v"},
                                         "policy": "default", "retries": 1}).json()["id"]
        once = c.post("/v1/runs", json={"argv": ["sh", "-c", "sleep 4.318"],
                                        "policy": "default"}).json()["id"]
        wait_until(lambda: all(c.get(f"/v1/runs/{i}").json()["status"] == "running"
                               and sandboxed(f"sleep 4.31{n}")
                               for n, i in ((7, retry), (8, once))),
                   120, "both runs running on the doomed worker")
        a.kill9()
        # its sandboxes die with it (the launcher's lifelines), before any re-run
        wait_until(lambda: not sandboxed("sleep 4.31"), 30, "the dead worker's sandboxes to go")
        start_worker("heir")
        r = wait_final(c, retry)
        assert r["status"] == "ok" and r["attempts"] == 2 and r["host"] == "heir", r
        assert r["result"]["stdout"] == "second\n"
        o = wait_final(c, once)
        assert o["status"] == "lost" and o["attempts"] == 1, o
        assert "doomed" in (o["reason"] or ""), o
        evs = events(c, retry)
        types = [t for _, t, _ in evs]
        assert types.count("started") == 2 and types.count("exit") == 1, types
        # one ordered stream across the hand-over, resumable from before it
        seqs = [s for s, _, _ in evs]
        assert seqs == sorted(set(seqs))
        first = types.index("started")
        assert [e[0] for e in events(c, retry, after=seqs[first])] == seqs[first + 1:]


def test_cancel_reaches_the_remote_worker(broker_server, start_worker):
    start_worker("far")
    with broker_server.client() as c:
        rid = c.post("/v1/runs", json={"argv": ["sleep", "61.5"],
                                       "policy": "default"}).json()["id"]
        wait_until(lambda: c.get(f"/v1/runs/{rid}").json()["status"] == "running"
                   and sandboxed("sleep 61.5"), 120, "the run to start")
        t0 = time.monotonic()
        assert c.post(f"/v1/runs/{rid}/cancel").status_code == 202
        v = wait_final(c, rid)
        took = time.monotonic() - t0
        assert v["status"] == "cancelled", v
        wait_until(lambda: not sandboxed("sleep 61.5"), 30, "the sandbox to die")
        print(f"cancel to final status: {took:.2f} s")


def test_events_are_ordered_and_resumable(broker_server, start_worker):
    start_worker("streamer")
    script = "for i in 1 2 3 4 5 6; do echo line$i; sleep 0.2; done"
    with broker_server.client() as c:
        rid = c.post("/v1/runs", json={"argv": ["sh", "-c", script],
                                       "policy": "default"}).json()["id"]
        wait_final(c, rid)
        evs = events(c, rid)
        seqs = [s for s, _, _ in evs]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        text = "".join(d for _, t, d in evs if t == "stdout")
        assert [text.find(f"line{i}") for i in range(1, 7)] == sorted(
            text.find(f"line{i}") for i in range(1, 7)) and "line6" in text
        mid = seqs[len(seqs) // 2]
        assert [e[0] for e in events(c, rid, after=mid)] == [s for s in seqs if s > mid]


def test_a_redis_restart_mid_stream_loses_nothing(tmp_path, redis_server, start_worker):
    s = make_server(tmp_path / "srv", "--broker", redis_server.url, "--lease", "15s").start()
    try:
        start_worker("steady")
        script = "for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 0.5; done"
        with s.client() as c:
            rid = c.post("/v1/runs", json={"argv": ["sh", "-c", script],
                                           "policy": "default"}).json()["id"]
            wait_until(lambda: "tick1" in "".join(d for _, _, d in events(c, rid)), 120,
                       "the first line")
            redis_server.kill9()
            queued = []
            time.sleep(0.5)
            redis_server.start()          # same port, same append-only file
            for i in range(5):            # submitted right after: acknowledged, so kept
                queued.append(c.post("/v1/runs", json={"argv": ["echo", f"q{i}"],
                                                       "policy": "default"}).json()["id"])
            v = wait_final(c, rid)
            assert v["status"] == "ok", v
            text = "".join(d for _, t, d in events(c, rid) if t == "stdout")
            assert all(f"tick{i}" in text for i in range(1, 9)), text
            for q in queued:
                assert wait_final(c, q)["status"] == "ok"
    finally:
        s.stop()
