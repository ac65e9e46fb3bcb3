"""What one run's messages and output make the service store and hold, judged from
the service's database, its HTTP answers and its memory.

Found by probing the landed main (2026-12-06): a strict run sending 99,000 IPC
frames of 2,600 characters (allowed by the run's frame budget) stored 392 MiB of
events in the service's database, more than three times the run's whole output
allowance, and each reader of its event stream made the server decode every
event before the first byte (0.5 GiB of server memory a reader); a listing of
runs carried every run's 16 MiB streams (335 MB for one `GET /v1/runs`).
"""
from __future__ import annotations

import os

import httpx
from service.helpers import client

from sandbox.service import streams

FLOOD = r"""
import json, os, struct, sys
fd = int(os.environ["SANDBOX_IPC_FD"])
body = json.dumps({"type": "x", "payload": "A" * 2600}).encode()
frame = struct.pack(">I", len(body)) + body
for _ in range(40):
    os.write(fd, frame * 1000)
print("sent")
"""


def _db_bytes(server) -> int:
    return sum(os.path.getsize(os.path.join(server.state, n))
               for n in os.listdir(server.state) if n.startswith("service.db"))


def test_a_message_flood_stores_a_bounded_number_of_events(server):
    with client(server) as c:
        before = _db_bytes(server)
        run = c.run(["python3", "-c", FLOOD], policy="strict")
        assert run.status == "ok", (run.reason, run.result and run.result.get("stderr"))
        assert run.result["messages"].get("x") == 40_000   # all seen, not all kept
        grown = _db_bytes(server) - before
    # 40,000 frames: ~110 MB unbounded; the database and its log hold a few copies
    assert grown < 4 * streams.MAX_RUN_MESSAGE_CHARS, grown
    with httpx.stream("GET", f"{server.url}/v1/runs/{run.id}/events",
                      headers=server.auth(), timeout=120) as r:
        kinds: dict[str, int] = {}
        for line in r.iter_lines():
            if line.startswith("event: "):
                kinds[line[7:]] = kinds.get(line[7:], 0) + 1
    kept = kinds.get("message", 0)
    assert 0 < kept < 40_000 and kinds.get("truncated") == 1, kinds
    assert kinds.get("exit") == 1


def test_a_listing_leaves_the_streams_out(server):
    big = "x" * (2 << 20)
    with client(server) as c:
        run = c.run(["python3", "-c", f"print('{big[:10]}' * {len(big) // 10})"],
                    policy="strict")
        assert run.status == "ok", run.reason
        assert len(c.get(run.id).result["stdout"]) > 2_000_000   # the run itself: whole
        r = httpx.get(f"{server.url}/v1/runs", headers=server.auth(), timeout=60)
        assert r.status_code == 200 and len(r.content) < 64 * 1024, len(r.content)
        item = next(i for i in r.json()["items"] if i["id"] == run.id)
        assert item["result"]["status"] == "ok" and "stdout" not in item["result"]
