"""POST/GET /v1/runs against a real server: submit, wait, list, cancel, auth."""
from __future__ import annotations

import base64
import os
import stat

import pytest

from service.server import Server as ServiceServer


def test_submit_program_with_wait_returns_result(http) -> None:
    r = http.post("/v1/runs", params={"wait": 60},
                  json={"argv": ["sh", "-c", 'cat in.txt; cat; echo $HOME; ls -A "$HOME"; '
                                'touch "$HOME/w" && echo $X'],
                        "stdin": "from-stdin\n", "env": {"X": "x-value"},
                        "files": [{"name": "in.txt",
                                   "content_b64": base64.b64encode(b"uploaded\n").decode()}]})
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "ok", run
    assert run["result"]["stdout"] == "uploaded\nfrom-stdin\n/tmp/home\nx-value\n"
    assert run["attempts"] == 1 and run["started_at"] >= run["queued_at"]
    assert run["links"]["self"] == f"/v1/runs/{run['id']}"
    again = http.get(f"/v1/runs/{run['id']}").json()
    assert again["status"] == "ok" and again["result"]["exit_code"] == 0


def test_submit_without_wait_is_202_then_get_waits(http) -> None:
    r = http.post("/v1/runs", json={"argv": ["sh", "-c", "exit 3"]})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/runs/{r.json()['id']}"
    done = http.get(f"/v1/runs/{r.json()['id']}", params={"wait": 60}).json()
    assert done["status"] == "error" and done["result"]["exit_code"] == 3


def test_no_token_or_wrong_token_is_401(service_server: ServiceServer) -> None:
    import httpx
    assert httpx.get(service_server.url + "/v1/runs").status_code == 401
    with service_server.client("sbx_not-a-token") as c:
        r = c.get("/v1/runs")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(service_server.url + "/healthz").status_code == 200


@pytest.mark.parametrize("body,field", [
    ({"argv": []}, "argv"),
    ({"argv": ["a"], "workflow": {"name": "w"}}, "exactly one"),
    ({"argv": ["a"], "files": [{"name": "../../x", "content_b64": ""}]}, "'..'"),
    ({"argv": ["a"], "files": [{"name": "/etc/x", "content_b64": ""}]}, "relative"),
    ({"argv": ["a"], "env": {"HOME": "/root"}}, "HOME"),
    ({"argv": ["a"], "policy": "/etc/passwd"}, "server path"),
    ({"argv": ["a"], "bogus": 1}, "bogus"),
    ({"argv": ["a"], "labels": {"queue": "Q" * 100_000}}, "queue"),
    ({"argv": ["a"], "labels": {"queue": "gpu/../x"}}, "queue"),
    ({"argv": ["a"], "labels": {"note": "y" * 1000}}, "at most 256"),
])
def test_bad_requests_are_422_naming_the_field(http, body, field) -> None:
    r = http.post("/v1/runs", json=body)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_a_body_nested_past_the_decoder_is_422_not_a_server_error(http) -> None:
    deep = '{"argv": ["a"], "labels": ' + "[" * 100_000 + "]" * 100_000 + "}"
    r = http.post("/v1/runs", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested too deeply" in r.text, r.text
    # a route whose body the framework reads answers its own 400
    r = http.post("/v1/policies/explain", content=deep,
                  headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert http.get("/healthz").status_code == 200


def test_state_dir_store_and_admin_token_are_private(service_server: ServiceServer) -> None:
    st = os.stat(service_server.state)
    assert stat.S_IMODE(st.st_mode) == 0o700
    for name in ("service.db", "admin.token"):
        assert stat.S_IMODE(os.stat(os.path.join(service_server.state, name)).st_mode) == 0o600


def test_list_paginates_with_a_cursor(http) -> None:
    ids = [http.post("/v1/runs", json={"argv": ["true"]}).json()["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/runs", params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_cancel_a_running_run(http) -> None:
    run = http.post("/v1/runs", json={"argv": ["sleep", "60"]}).json()
    http.get(f"/v1/runs/{run['id']}", params={"wait": 0})
    r = http.post(f"/v1/runs/{run['id']}/cancel")
    assert r.status_code == 202
    done = http.get(f"/v1/runs/{run['id']}", params={"wait": 60}).json()
    assert done["status"] == "cancelled", done


def test_numbers_past_the_store_are_422_not_a_server_error(service_server, http) -> None:
    """A cursor of digits that are not ASCII ('²' is a digit to str.isdigit, not to
    int), or one past SQLite's 64 bits, was a 500 with a traceback in the server's
    log; so was ?after= of a run's events past 64 bits (the stream broke after its
    200), and a Last-Event-ID of '²' (probe 2026-12-07)."""
    run = http.post("/v1/runs", params={"wait": 60}, json={"argv": ["true"]}).json()
    assert run["status"] == "ok", run
    huge = str(1 << 64)
    for cursor in ("\u00b2", "\u0663", huge, "9" * 32):
        r = http.get("/v1/runs", params={"cursor": cursor})
        assert r.status_code == 422 and "cursor" in r.text, (cursor, r.status_code, r.text)
    r = http.get(f"/v1/runs/{run['id']}/events", params={"after": huge})
    assert r.status_code == 422 and "after" in r.text, r.text
    for last in (b"\xb2", huge.encode()):     # the server reads header bytes as latin-1
        r = http.get(f"/v1/runs/{run['id']}/events", headers={"last-event-id": last})
        # an id this server never gave: the whole stream, from the start
        assert r.status_code == 200 and "event: exit" in r.text, (last, r.text[:300])
    assert "Traceback" not in open(service_server.log).read()
