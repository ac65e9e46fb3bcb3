"""What runs that wait cost an idle scale-out server, counted in bytes its process
reads (`/proc/PID/io`): nothing proportional to their requests.

Found by an attack probe (2026-12-06): the dispatcher (every 0.2 s while a run
was queued) and the lease reaper (every 0.5 to 1 s) read the whole row of every
running run, request included; four runs handed to a queue no worker took, and
one more queued behind its token's limit, kept an idle server at 85 % CPU.
"""
from __future__ import annotations

import time

import pytest

from service.helpers import make_token

pytestmark = pytest.mark.redis

MiB = 1 << 20


def _io(pid: int) -> tuple[int, float]:
    """(bytes read, CPU seconds) of the process so far."""
    with open(f"/proc/{pid}/io") as f:
        rchar = next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    import os
    return rchar, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_waiting_runs_cost_an_idle_server_nothing_per_pass(broker_server):
    kate = make_token(broker_server, "kate", "--max-concurrent", "2")
    env = {f"V{i}": "x" * 30000 for i in range(200)}          # 6 MB of request a run
    assert broker_server.proc is not None
    pid = broker_server.proc.pid
    with broker_server.client(kate) as c:
        ids = [c.post("/v1/runs", json={"argv": ["true"], "env": env}, timeout=120).json()["id"]
               for _ in range(2)]                      # handed to the broker, no worker
        ids.append(c.post("/v1/runs", json={"argv": ["true"]}).json()["id"])   # waits
        deadline = time.monotonic() + 60
        while [c.get(f"/v1/runs/{i}").json()["status"] for i in ids] != \
                ["running", "running", "queued"]:
            assert time.monotonic() < deadline, "the runs' states"
            time.sleep(0.2)
        time.sleep(1)
        read0, cpu0 = _io(pid)
        time.sleep(5)
        read1, cpu1 = _io(pid)
    # each pass that read the two rows read 12 MB; 5 s held more than 30 passes
    assert read1 - read0 < 8 * MiB, (read1 - read0, f"cpu {cpu1 - cpu0:.2f} s")
