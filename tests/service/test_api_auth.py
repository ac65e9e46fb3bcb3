"""Tokens, ceilings and limits against a real server: 403, 429, 413, tenancy."""
from __future__ import annotations

import json
import subprocess
import sys

from service.server import Server as ServiceServer


def make_token(srv: ServiceServer, *args: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "sandbox", "token", "--state", srv.state,
                        "create", "--json", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_token_list_never_shows_secrets_and_store_keeps_hashes(service_server) -> None:
    tok = make_token(service_server, "--name", "ci", "--ceiling", "strict")
    p = subprocess.run([sys.executable, "-m", "sandbox", "token", "--state",
                        service_server.state, "list", "--json"], capture_output=True, text=True)
    assert p.returncode == 0 and tok["token"] not in p.stdout
    with open(f"{service_server.state}/service.db", "rb") as f:
        assert tok["token"].encode() not in f.read()


def test_over_the_ceiling_is_403_with_the_comparison_reason(service_server) -> None:
    tok = make_token(service_server, "--name", "ci", "--ceiling", "strict")
    with service_server.client(tok["token"]) as c:
        r = c.post("/v1/runs", json={"argv": ["true"], "policy": "default"})
        assert r.status_code == 403, r.text
        assert "ceiling 'strict'" in r.json()["detail"] and "limits." in r.json()["detail"]
        ok = c.post("/v1/runs", params={"wait": 60}, json={"argv": ["true"]})
        assert ok.status_code == 200 and ok.json()["policy"] == "strict", ok.text


def test_inline_policy_cannot_extend_a_server_path(http) -> None:
    r = http.post("/v1/runs", json={"argv": ["true"], "policy_inline": {
        "name": "x", "extends": ["/etc/passwd"]}})
    assert r.status_code == 422, r.text


def test_policy_reaching_into_the_state_directory_is_403_even_for_admin(service_server,
                                                                       http) -> None:
    r = http.post("/v1/runs", json={"argv": ["true"], "policy_inline": {
        "name": "peek", "extends": ["default"],
        "filesystem": {"read": [service_server.state + "/runs"]}}})
    assert r.status_code == 403, r.text
    assert "state directory" in r.json()["detail"]


def test_revoked_token_is_401_and_runs_are_private_to_their_token(service_server, http) -> None:
    a = make_token(service_server, "--name", "a")
    b = make_token(service_server, "--name", "b")
    with service_server.client(a["token"]) as ca, service_server.client(b["token"]) as cb:
        run = ca.post("/v1/runs", json={"argv": ["true"]}).json()
        assert cb.get(f"/v1/runs/{run['id']}").status_code == 404
        assert cb.post(f"/v1/runs/{run['id']}/cancel").status_code == 404
        assert run["id"] not in [i["id"] for i in cb.get("/v1/runs").json()["items"]]
        assert http.get(f"/v1/runs/{run['id']}").status_code == 200      # admin sees all
        subprocess.run([sys.executable, "-m", "sandbox", "token", "--state",
                        service_server.state, "revoke", "a"], check=True, capture_output=True)
        assert ca.get("/v1/runs").status_code == 401


def test_queue_quota_and_rate_are_429_with_retry_after(service_server) -> None:
    q = make_token(service_server, "--name", "q", "--max-queued", "1", "--max-concurrent", "1")
    with service_server.client(q["token"]) as c:
        codes = [c.post("/v1/runs", json={"argv": ["sleep", "30"]}) for _ in range(4)]
        refused = [r for r in codes if r.status_code == 429]
        assert refused and all(int(r.headers["retry-after"]) >= 1 for r in refused)
        for r in codes:
            if r.status_code == 202:
                c.post(f"/v1/runs/{r.json()['id']}/cancel")
    rt = make_token(service_server, "--name", "r", "--rate", "1/s")
    with service_server.client(rt["token"]) as c:
        codes2 = [c.post("/v1/runs", json={"argv": ["true"]}).status_code for _ in range(3)]
        assert 429 in codes2 and codes2[0] == 202


def test_a_tokens_queue_list_keeps_its_runs_on_those_queues(service_server, http) -> None:
    """Any tenant could send runs to any queue (the queue picks the worker hosts,
    e.g. the GPU ones); a token made with --queues may name only those."""
    g = make_token(service_server, "--name", "g", "--queues", "gpu")
    with service_server.client(g["token"]) as c:
        r = c.post("/v1/runs", json={"argv": ["true"]})
        assert r.status_code == 403 and "may use the queues gpu, not 'default'" in r.text
        r = c.post("/v1/runs", json={"argv": ["true"], "labels": {"queue": "other"}})
        assert r.status_code == 403, r.text
        assert c.post("/v1/runs", json={"argv": ["true"],
                                        "labels": {"queue": "gpu"}}).status_code == 202
    made = http.post("/v1/tokens", json={"name": "h", "queues": ["b", "a", "a"]})
    assert made.status_code in (200, 201) and made.json()["queues"] == ["a", "b"], made.text
    bad = http.post("/v1/tokens", json={"name": "i", "queues": ["a/../b"]})
    assert bad.status_code == 422
    assert any(t["queues"] == ["gpu"] for t in http.get("/v1/tokens").json()
               if t["name"] == "g")


def test_oversized_body_is_413(service_server, http) -> None:
    big = "A" * (65 * 1024 * 1024)
    r = http.post("/v1/runs", content=b'{"argv":["true"],"stdin":"' + big.encode() + b'"}',
                  headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_a_tokens_max_concurrent_holds_its_other_runs_in_the_queue(service_server) -> None:
    from service.sse import read_events
    one = make_token(service_server, "--name", "one", "--max-concurrent", "1")
    with service_server.client(one["token"]) as c:
        first = c.post("/v1/runs", json={"argv": ["sleep", "60"]}).json()
        second = c.post("/v1/runs", json={"argv": ["echo", "second"]}).json()
        for _ in read_events(c, first["links"]["events"], until="started"):
            pass
        # the server has free workers (8) but this token's one slot is taken
        assert c.get(second["links"]["self"], params={"wait": 3}).json()["status"] == "queued"
        c.post(first["links"]["cancel"])
        done = c.get(second["links"]["self"], params={"wait": 60}).json()
        assert done["status"] == "ok" and done["result"]["stdout"] == "second\n"
