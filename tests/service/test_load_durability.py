"""Issue 16 item 8: 200 submissions from 8 concurrent clients with none lost or
duplicated; `kill -9` of the server with runs queued and running, then a
restart: every run accounted for (`lost`, or re-run when `retries` allowed),
and no sandbox of the dead server left running."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import processes_with
from service.helpers import client

pytestmark = pytest.mark.slow


def test_200_submissions_from_8_clients_none_lost_or_duplicated(server):
    def submit_25(k: int) -> list[str]:
        with client(server) as c:
            return [c.submit(["true"], labels={"k": str(k), "i": str(i)}).id for i in range(25)]
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(submit_25, range(8)))
    ids = [i for b in batches for i in b]
    assert len(ids) == 200 and len(set(ids)) == 200
    with client(server) as c:
        finals = {i: c.wait(i, deadline=600) for i in ids}
        listed = [r.id for r in c.iter_runs(page_size=37)]
    assert sorted(listed) == sorted(ids)                  # nothing extra, nothing missing
    assert {r.status for r in finals.values()} == {"ok"}
    assert {r.attempts for r in finals.values()} == {1}   # none ran twice
    labels = {(r.labels["k"], r.labels["i"]) for r in finals.values()}
    assert len(labels) == 200


def _wait_status(c, run_id: str, want: str, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while (s := c.get(run_id).status) != want:
        assert time.monotonic() < end, f"{run_id} stayed {s}, expected {want}"
        time.sleep(0.1)


def test_kill9_with_runs_queued_and_running_accounts_for_every_run(start_server):
    srv = start_server("--max-concurrent", "2")
    marker = f"61.{int(time.time() * 1000) % 100000}"
    with client(srv) as c:
        lost = c.submit(["sleep", marker])                       # running, no retries
        again = c.submit(["sh", "-c", f"sleep {marker} & sleep 2; kill $!; echo second"],
                         retries=1)                              # running, may re-run
        queued = [c.submit(["sh", "-c", f"echo q{i}"]) for i in range(3)]
        _wait_status(c, lost.id, "running")
        _wait_status(c, again.id, "running")
        assert {c.get(q.id).status for q in queued} == {"queued"}
    deadline = time.monotonic() + 60
    while len(processes_with(marker)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes_with(marker)) >= 2                      # both sandboxes are alive
    srv.kill9()
    deadline = time.monotonic() + 30
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []                          # died with their server
    srv.start()
    with client(srv) as c:
        ended = c.wait(lost.id, deadline=120)
        assert ended.status == "lost" and ended.reason
        rerun = c.wait(again.id, deadline=300)
        assert rerun.status == "ok" and rerun.attempts == 2, rerun
        assert rerun.result["stdout"] == "second\n"
        for i, q in enumerate(queued):
            done = c.wait(q.id, deadline=300)
            assert done.status == "ok" and done.result["stdout"] == f"q{i}\n"
            assert done.attempts == 1
        listed = {r.id for r in c.iter_runs()}
    assert listed == {lost.id, again.id, *(q.id for q in queued)}
