"""Runs through `sandbox serve --broker` on real workers: they run, each once,
on the hosts that took them, and the server's API has the whole record."""
from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.redis


def wait_final(c: httpx.Client, run_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(f"/v1/runs/{run_id}", params={"wait": 5})
        r.raise_for_status()
        v = r.json()
        if v["status"] not in ("queued", "running"):
            return v
    raise AssertionError(f"run {run_id} did not end: {v}")


def test_a_run_goes_to_a_worker_and_comes_back(broker_server, start_worker):
    start_worker("alpha")
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["sh", "-c", "echo hi from $0; echo oops >&2"],
                                     "policy": "default"})
        assert r.status_code == 202, r.text
        v = wait_final(c, r.json()["id"])
        assert v["status"] == "ok", v
        assert v["host"] == "alpha"
        assert v["attempts"] == 1
        assert "hi from sh" in v["result"]["stdout"]
        assert v["result"]["host"] == "alpha" and v["result"]["attempt"] == 1
        evs = c.get(f"/v1/runs/{v['id']}/events").text
        assert "event: started" in evs and "event: exit" in evs and "hi from sh" in evs


def test_outputs_come_back_and_planted_links_do_not(broker_server, start_worker):
    start_worker("alpha")
    script = ('echo data > "$SANDBOX_OUTPUT/a.txt"; mkdir -p "$SANDBOX_OUTPUT/sub"; '
              'printf x > "$SANDBOX_OUTPUT/sub/b.bin"; ln -s /etc/shadow "$SANDBOX_OUTPUT/shadow"')
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["sh", "-c", script], "policy": "default"})
        v = wait_final(c, r.json()["id"])
        assert v["status"] == "ok", v
        listing = c.get(f"/v1/runs/{v['id']}/files").json()["items"]
        paths = {i["path"]: i["kind"] for i in listing}
        assert paths.get("a.txt") == "file" and paths.get("sub/b.bin") == "file", listing
        assert "shadow" not in paths          # never shipped: only regular files travel
        got = c.get(f"/v1/runs/{v['id']}/files/a.txt")
        assert got.status_code == 200 and got.content == b"data\n"


def test_the_audit_of_a_remote_run_is_served_by_the_server(broker_server, start_worker):
    start_worker("auditor")
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["sh", "-c", "cat /etc/shadow; true"],
                                     "policy": "strict"})
        v = wait_final(c, r.json()["id"])
        assert v["host"] == "auditor", v
        got = c.get(f"/v1/runs/{v['id']}/audit", params={"denied": 1})
        assert got.status_code == 200, got.text
        paths = [i.get("path") for i in got.json()["items"]]
        assert "/etc/shadow" in paths, got.json()
        sug = c.get(f"/v1/runs/{v['id']}/policy/suggest")
        assert sug.status_code == 200, sug.text


def test_outputs_travel_as_what_the_run_wrote(broker_server, start_worker):
    """One byte at the end of a 32 MiB hole, and ten more names of that file: the
    worker shipped 32 MiB of zeros per name through Redis (336 MiB for a run whose
    output held 4 KiB) and the server wrote them all. Now the data travels once, the
    holes stay holes and the names come back as links."""
    import os
    start_worker("alpha")
    size = 32 << 20
    script = (f'cd "$SANDBOX_OUTPUT" && printf end | dd of=big bs=1 seek={size - 3} '
              '2>/dev/null && for i in 0 1 2 3 4 5 6 7 8 9; do ln big "big.$i"; done')
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["sh", "-c", script], "policy": "strict"})
        v = wait_final(c, r.json()["id"])
        assert v["status"] == "ok", v
        listing = c.get(f"/v1/runs/{v['id']}/files").json()["items"]
        kinds = sorted(i["kind"] for i in listing)
        assert kinds == ["file"] + ["link"] * 10, listing
        big = next(i for i in listing if i["kind"] == "file")
        assert big["size"] == size and big["allocated"] < (1 << 20), big
        got = c.get(f"/v1/runs/{v['id']}/files/{big['href']}")
        assert got.status_code == 200 and len(got.content) == size
        assert got.content[-3:] == b"end"
    out = os.path.join(broker_server.state, "runs", v["id"], "output")
    st = os.stat(os.path.join(out, "big"))
    assert st.st_nlink == 11 and st.st_blocks * 512 < (1 << 20)


def test_a_revoked_tokens_queued_runs_never_start(broker_server, start_worker):
    """Revoked, a token was refused at once (401), but its runs queued behind its
    concurrency limit were still handed to workers afterwards; the in-process queue
    ended them. Now the dispatcher does too."""
    import subprocess
    import sys
    from service.helpers import make_token
    start_worker("alpha")
    tok = make_token(broker_server, "t", "--max-concurrent", "1")
    with broker_server.client(tok) as c:
        ids = [c.post("/v1/runs", json={"argv": ["sleep", "5"], "policy": "strict"}).json()["id"]
               for _ in range(4)]
    subprocess.run([sys.executable, "-m", "sandbox", "token", "--state", broker_server.state,
                    "revoke", "t"], check=True, capture_output=True, timeout=120)
    with broker_server.client() as c:
        ends = [wait_final(c, i) for i in ids]
    refused = [v for v in ends if v["reason"] == "the token that submitted it was revoked"]
    assert len(refused) >= 2, [(v["status"], v["reason"]) for v in ends]
    assert all(v["status"] == "cancelled" for v in refused)


def test_a_run_no_worker_took_is_cancelled_at_once(broker_server):
    """Handed to the broker with no worker running, a run stayed "running" however
    often it was cancelled (found by probing): only a worker read the cancel key."""
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["true"]})
        run_id = r.json()["id"]
        deadline = time.monotonic() + 30
        while c.get(f"/v1/runs/{run_id}").json()["status"] == "queued":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.post(f"/v1/runs/{run_id}/cancel").status_code < 300
        v = wait_final(c, run_id, timeout=30)
        assert (v["status"], v["reason"]) == ("cancelled", "cancelled before a worker started it")


def redis_values(redis_server) -> bytes:
    """Every key and value in the broker's Redis, as one blob to search."""
    import redis
    r = redis.Redis.from_url(redis_server.url)
    blob = []
    for k in r.scan_iter(count=1000):
        kind = r.type(k)
        blob.append(k)
        if kind == b"string":
            blob.append(r.get(k) or b"")
        elif kind == b"hash":
            blob.extend(b for kv in r.hgetall(k).items() for b in kv)
        elif kind == b"list":
            blob.extend(r.lrange(k, 0, -1))
        elif kind == b"set":
            blob.extend(r.smembers(k))
        elif kind == b"zset":
            blob.extend(r.zrange(k, 0, -1))
        elif kind == b"stream":
            blob.extend(repr(e).encode() for e in r.xrange(k))
    return b"\n".join(blob)


def test_a_queue_no_worker_serves_is_refused(broker_server, start_worker, redis_server):
    """Any queue label was taken: its message waited in Redis for ever (with the
    run's secret values), and every made-up name became a Redis queue."""
    start_worker("gpu-host", "--queues", "gpu")
    with broker_server.client() as c:
        deadline = time.monotonic() + 60
        while not any(w["host"] == "gpu-host" for w in c.get("/v1/workers").json()["workers"]):
            assert time.monotonic() < deadline, "the worker's heartbeat"
            time.sleep(0.1)
        r = c.post("/v1/runs", json={"argv": ["true"], "labels": {"queue": "nobody"}})
        assert r.status_code == 422, r.text
        assert "no live worker serves queue 'nobody'" in r.text and "gpu" in r.text
        assert b"nobody" not in redis_values(redis_server)
        ok = c.post("/v1/runs", json={"argv": ["true"], "labels": {"queue": "gpu"}})
        assert ok.status_code == 202, ok.text
        v = wait_final(c, ok.json()["id"])
        assert (v["status"], v["host"]) == ("ok", "gpu-host"), v


def test_secret_values_never_ride_in_a_message_and_leave_redis_with_the_run(
        broker_server, start_worker, redis_server):
    """Secret env values travelled inside the Dramatiq message: one no worker took
    kept them in Redis indefinitely. They now wait under one key with a TTL and
    are gone from Redis once the run ends, whichever way it ends."""
    secret = "s3cr3t-" + "x" * 20
    with broker_server.client() as c:
        waiting = c.post("/v1/runs", json={"argv": ["true"], "secret_env": {"K": secret}})
        run_id = waiting.json()["id"]
        import redis
        r = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 30
        while not (messages := b"".join(r.hgetall("dramatiq:default.msgs").values())):
            assert time.monotonic() < deadline, "the run's message"
            time.sleep(0.05)
        assert run_id.encode() in messages and secret.encode() not in messages
        assert 0 < r.ttl(f"sandbox:run:{run_id}:secrets") <= 24 * 3600
        c.post(f"/v1/runs/{run_id}/cancel")
        assert wait_final(c, run_id)["status"] == "cancelled"
        assert secret.encode() not in redis_values(redis_server)
        start_worker("alpha")
        ran = c.post("/v1/runs", json={"argv": ["sh", "-c", 'test "$K" = "$1" && echo same',
                                                "sh", secret], "secret_env": {"K": secret}})
        v = wait_final(c, ran.json()["id"])
        assert v["status"] == "ok" and v["result"]["stdout"] == "same\n", v
        # the worker deletes them right after its final report: the server may
        # have applied that report a moment before
        deadline = time.monotonic() + 10
        while secret.encode() in redis_values(redis_server):
            assert time.monotonic() < deadline, "the secrets outlived the run"
            time.sleep(0.05)


def test_stdin_reaches_a_worker_and_stays_out_of_the_store(broker_server, start_worker):
    """stdin is a file beside the run's inputs on the server (it was kept in the
    stored request, and every listing read it back); a worker gets it in its job."""
    import base64
    import sqlite3
    start_worker("alpha")
    data = bytes(range(256)) * 4096
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["sh", "-c", "wc -c; echo"],
                                     "stdin_b64": base64.b64encode(data).decode()})
        text = c.post("/v1/runs", json={"argv": ["cat"], "stdin": "hello\n"})
        v, t = wait_final(c, r.json()["id"]), wait_final(c, text.json()["id"])
        assert v["status"] == "ok" and v["result"]["stdout"].split() == [str(len(data))], v
        assert (t["status"], t["result"]["stdout"]) == ("ok", "hello\n"), t
    db = sqlite3.connect(f"file:{broker_server.state}/service.db?mode=ro", uri=True)
    assert db.execute("SELECT MAX(LENGTH(request)) FROM runs").fetchone()[0] < 4096


def test_a_worker_keeps_no_audit_file_of_a_run_or_its_nested_runs(broker_server, start_worker):
    """The server holds the audit record (shipped with the result); a worker's own
    copies of the run's and its nested runs' audit files were kept for ever
    (found with probe2 finding 8)."""
    import base64
    import os
    from service.test_retention import TREE, _audit_files
    w = start_worker("alpha")
    state = str(w.root / "state")
    wf = {"id": "tree", "name": "tree", "imports": ["tree_actions"],
          "stages": [{"id": "s", "actions": ["top"]}]}
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"workflow": wf, "policy": "strict", "files": [
            {"name": "tree_actions.py", "content_b64": base64.b64encode(TREE).decode()}]})
        v = wait_final(c, r.json()["id"])
        assert v["status"] == "ok", v
        assert c.get(f"/v1/runs/{v['id']}/audit").status_code == 200
    assert os.path.isdir(os.path.join(state, "audit"))
    assert _audit_files(state) == set()


def test_a_remote_runs_audit_holds_no_secret_value(broker_server, start_worker):
    """The worker masks secret values in the audit file before shipping it (probe2
    finding 11: the file also travelled through Redis as it was)."""
    start_worker("alpha")
    secret = "topsecretvalue123"
    with broker_server.client() as c:
        r = c.post("/v1/runs", json={"argv": ["sh", "-c", "cat /root/$K 2>/dev/null; true"],
                                     "policy": "strict", "secret_env": {"K": secret}})
        v = wait_final(c, r.json()["id"])
        assert v["status"] == "ok", v
        audit = c.get(f"/v1/runs/{v['id']}/audit", params={"denied": 1}).json()
        assert "/root/[secret]" in [i["path"] for i in audit["items"]], audit
        assert secret not in str(audit)
