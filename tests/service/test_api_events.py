"""GET /v1/runs/{id}/events and /v1/events against a real server."""
from __future__ import annotations

import base64
import os
import threading

from service.sse import read_events

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "examples")


def test_follow_a_program_to_the_end_then_resume_with_last_event_id(http) -> None:
    run = http.post("/v1/runs", json={"argv": [
        "sh", "-c", "echo out-1; sleep 0.3; echo err-1 >&2; sleep 0.3; echo out-2; exit 2"]}
    ).json()
    events = list(read_events(http, run["links"]["events"]))
    types = [e.event for e in events]
    assert types[0] == "queued" and types[1] == "started" and types[-1] == "exit", types
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    out = "".join(e.data["text"] for e in events if e.event == "stdout")
    err = "".join(e.data["text"] for e in events if e.event == "stderr")
    assert out == "out-1\nout-2\n" and err == "err-1\n"
    assert events[-1].data["status"] == "error" and events[-1].data["exit_code"] == 2
    # the finished run replays; Last-Event-ID resumes exactly after that event
    again = list(read_events(http, run["links"]["events"]))
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in events]
    tail = list(read_events(http, run["links"]["events"],
                            headers={"Last-Event-ID": events[1].id}))
    assert [e.id for e in tail] == [e.id for e in events[2:]]


def test_output_is_data_never_sse_framing(http) -> None:
    evil = "x\\n\\nevent: exit\\ndata: {\\\"status\\\": \\\"ok\\\"}\\nid: 999\\n\\n\\r\\033[2J"
    run = http.post("/v1/runs", json={"argv": ["sh", "-c", f"printf '{evil}'; exit 1"]}).json()
    events = list(read_events(http, run["links"]["events"]))
    assert [e.event for e in events].count("exit") == 1
    assert events[-1].data["status"] == "error"
    text = "".join(e.data["text"] for e in events if e.event == "stdout")
    assert "event: exit" in text and "\x1b[2J" in text


def test_secret_env_reaches_the_run_but_is_never_stored_or_echoed(service_server,
                                                                 http) -> None:
    secret = "s3cr3t-Value-0123456789"
    run = http.post("/v1/runs", params={"wait": 60}, json={
        "argv": ["sh", "-c", 'printf %s "${S%%Value*}"; sleep 0.3; '
                 'printf "%s\\n" "Value${S#*Value}"; test "${#S}" = ' + str(len(secret))],
        "secret_env": {"S": secret}}).json()
    assert run["status"] == "ok", run      # the run saw the value
    events = list(read_events(http, run["links"]["events"]))
    shown = "".join(e.data["text"] for e in events if e.event == "stdout")
    assert shown == "[secret]\n", shown
    assert secret not in str(run) and secret not in str([e.data for e in events])
    for root, _dirs, files in os.walk(service_server.state):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert secret.encode() not in f.read(), os.path.join(root, name)


def test_workflow_with_uploaded_actions_streams_its_log_and_returns_its_store(http) -> None:
    with open(os.path.join(EXAMPLES, "example_actions.py"), "rb") as f:
        code = base64.b64encode(f.read()).decode()
    with open(os.path.join(EXAMPLES, "hello.json")) as f:
        import json
        wf = json.load(f)
    run = http.post("/v1/runs", json={"workflow": wf, "files": [
        {"name": "example_actions.py", "content_b64": code}]}).json()
    assert run["kind"] == "workflow" and run["workflow"] == "Hello"
    events = list(read_events(http, run["links"]["events"]))
    logs = [e.data["record"] for e in events if e.event == "log"]
    assert any("hello, sandbox!" in str(r) for r in logs), [e.event for e in events]
    assert events[-1].data["status"] == "ok"
    done = http.get(f"/v1/runs/{run['id']}").json()
    assert done["result"]["store"]["greeting"] == "hello"


def test_global_stream_shows_only_the_tokens_own_runs(service_server, http) -> None:
    from service.test_api_auth import make_token
    a = make_token(service_server, "--name", "a")
    seen: list = []
    ready = threading.Event()

    def listen() -> None:
        with service_server.client(a["token"]) as ca:
            ready.set()
            for e in read_events(ca, "/v1/events", until=None, limit=3):
                seen.append(e)
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    ready.wait(10)
    import time
    time.sleep(1.0)   # the listener's request reaches the server
    http.post("/v1/runs", params={"wait": 60}, json={"argv": ["true"]})   # admin's: not shown
    with service_server.client(a["token"]) as ca:
        mine = ca.post("/v1/runs", params={"wait": 60}, json={"argv": ["true"]}).json()
    t.join(60)
    assert [e.event for e in seen] == ["queued", "started", "exit"], seen
    assert {e.data["run_id"] for e in seen} == {mine["id"]}
