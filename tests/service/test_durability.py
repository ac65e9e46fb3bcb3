"""kill -9 of the server with runs queued and running, then a restart: every run
is accounted for (queued ones run, running ones end lost or are re-queued by
their retries), none is duplicated; idempotent resubmission."""
from __future__ import annotations

import time

from service.sse import read_events


def _wait_started(http, run_id: str) -> None:
    for e in read_events(http, f"/v1/runs/{run_id}/events", until="started"):
        pass


def test_kill9_with_runs_queued_and_running_then_restart(start_server) -> None:
    srv = start_server("--max-concurrent", "2")
    with srv.client() as http:
        lost = http.post("/v1/runs", json={"argv": ["sh", "-c", "echo before-kill; sleep 60"]}
                         ).json()
        retried = http.post("/v1/runs", json={"argv": ["sh", "-c", "sleep 8; echo done"],
                                               "retries": 1}).json()
        queued = [http.post("/v1/runs", json={"argv": ["echo", str(i)]}).json()
                  for i in range(3)]
        _wait_started(http, lost["id"])
        _wait_started(http, retried["id"])
        # the first run's output reached the store before the kill
        for e in read_events(http, f"/v1/runs/{lost['id']}/events", until="stdout"):
            pass
        assert http.get(f"/v1/runs/{queued[0]['id']}").json()["status"] == "queued"
    srv.kill9()
    srv.start()
    with srv.client() as http:
        done = {r["id"]: http.get(f"/v1/runs/{r['id']}", params={"wait": 120}).json()
                for r in (lost, retried, *queued)}
        got = done[lost["id"]]
        assert got["status"] == "lost" and got["attempts"] == 1, got
        assert got["result"]["stdout"] == "before-kill\n"
        again = done[retried["id"]]
        assert again["status"] == "ok" and again["attempts"] == 2, again
        assert again["result"]["stdout"] == "done\n"
        for i, r in enumerate(queued):
            assert done[r["id"]]["status"] == "ok" and done[r["id"]]["attempts"] == 1
            assert done[r["id"]]["result"]["stdout"] == f"{i}\n"
        listed = http.get("/v1/runs", params={"limit": 500}).json()["items"]
        assert sorted(i["id"] for i in listed) == sorted(done)
        # the lost run's stream ends with its exit
        tail = list(read_events(http, f"/v1/runs/{lost['id']}/events"))
        assert tail[-1].event == "exit" and tail[-1].data["status"] == "lost"


def test_idempotency_key_makes_a_retried_submit_safe(http) -> None:
    body = {"argv": ["echo", "once"]}
    a = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    b = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-1"})
    c = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "k-2"})
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] == b.json()["id"] != c.json()["id"]
    assert len(http.get("/v1/runs").json()["items"]) == 2


def test_a_store_of_the_previous_schema_version_is_migrated(tmp_path) -> None:
    import sqlite3
    from sandbox.service import store as S
    path = str(tmp_path / "old.db")
    db = sqlite3.connect(path)
    db.executescript(S.MIGRATIONS[0])
    db.execute("INSERT INTO tokens VALUES ('t','n','h',NULL,1,1,NULL,1,0,NULL)")
    db.execute("INSERT INTO runs (id, token_id, status, kind, request, created_at, host, "
               "finished_at) VALUES ('r','t','ok','exec','{}',1,'h',2)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    st = S.Store(path)
    assert S.SCHEMA_VERSION == 4 and st.version == S.SCHEMA_VERSION
    assert st.token("t").name == "n" and st.run("r").status == "ok"
    assert st.token("t").queues is None      # an old token may use any queue, as before
    assert st.finished_before(3) == ["r"]
    assert st._q("SELECT name FROM sqlite_master WHERE name='runs_finished'")
    st.close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {S.SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    import pytest
    with pytest.raises(S.StoreError, match="upgrade sandbox"):
        S.Store(path)
