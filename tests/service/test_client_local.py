"""The client's own defences, judged from the caller's disk, without a real
service: a hostile (or compromised) server answers over real HTTP on 127.0.0.1,
and the client must not write outside the destination, must not mistake a
run's bytes for events, and must turn every refusal into its typed error."""
from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.client import errors, files, sse
from sandbox.client.sync import Client

RUN = {"id": "run_1", "status": "ok", "kind": "exec", "token": "t", "created_at": 1.0,
       "queued_at": 1.0, "host": "h",
       "links": {"self": "", "events": "", "files": "", "cancel": "", "audit": ""}}


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers from `routes`: path -> (status, headers, body bytes)."""
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, dict(self.headers)))
        status, headers, body = self.routes.get(self.path.split("?")[0],
                                                (404, {}, b'{"detail": "no"}'))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *a: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[tuple[str, type[Hostile]]]:
    class H(Hostile):
        routes = {}
        seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", H
    srv.shutdown()
    srv.server_close()


def _listing(*names: str) -> bytes:
    return json.dumps({"items": [{"path": n, "size": 1, "kind": "file"} for n in names]}).encode()


@pytest.mark.parametrize("name", ["../../x", "/etc/x", "a/../../x", "./x", "a//x", "..", "x\0y"])
def test_download_all_refuses_names_that_leave_the_destination(hostile, tmp_path, name):
    url, H = hostile
    H.routes["/v1/runs/run_1/files"] = (200, {}, _listing("fine.txt", name))
    H.routes["/v1/runs/run_1/files/fine.txt"] = (200, {}, b"ok")
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with Client(url, "tok") as c, pytest.raises(files.UnsafePath):
        c.download_all("run_1", str(dest))
    # nothing written at all, not even the good file: the listing is refused whole
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert not any("/files/" in path for path, _ in H.seen)


def test_download_never_follows_a_link_in_the_destination(hostile, tmp_path):
    url, H = hostile
    H.routes["/v1/runs/run_1/files"] = (200, {}, _listing("sub/f", "g"))
    H.routes["/v1/runs/run_1/files/sub/f"] = (200, {}, b"payload")
    H.routes["/v1/runs/run_1/files/g"] = (200, {}, b"payload")
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)              # planted before the download
    with Client(url, "tok") as c, pytest.raises(OSError):
        c.download_all("run_1", str(dest))
    assert list(outside.iterdir()) == []
    (dest / "sub").unlink()
    (dest / "g").symlink_to(outside / "target")     # a dangling link at a file's name
    with Client(url, "tok") as c, pytest.raises(FileExistsError):
        c.download("run_1", "g", str(dest))
    assert not (outside / "target").exists()


def test_download_writes_plain_files_without_special_bits(hostile, tmp_path):
    url, H = hostile
    H.routes["/v1/runs/run_1/files"] = (200, {}, _listing("d/e/f.bin", "top"))
    H.routes["/v1/runs/run_1/files/d/e/f.bin"] = (200, {}, b"\x00\x01")
    H.routes["/v1/runs/run_1/files/top"] = (200, {}, b"t")
    with Client(url, "tok") as c:
        written = c.download_all("run_1", str(tmp_path))
    assert sorted(written) == sorted([str(tmp_path / "d/e/f.bin"), str(tmp_path / "top")])
    assert (tmp_path / "d/e/f.bin").read_bytes() == b"\x00\x01"
    assert os.stat(tmp_path / "top").st_mode & 0o7000 == 0


@pytest.mark.parametrize("status,cls", [(401, errors.Unauthorized), (403, errors.Forbidden),
                                        (404, errors.NotFound), (413, errors.PayloadTooLarge),
                                        (422, errors.ValidationFailed),
                                        (429, errors.RateLimited), (500, errors.ServerError),
                                        (502, errors.ServerError)])
def test_http_errors_become_typed_exceptions_with_the_servers_reason(hostile, status, cls):
    url, H = hostile
    H.routes["/v1/runs/run_1"] = (status, {"Retry-After": "7"},
                                  json.dumps({"detail": f"because \x1b[2J {status}"}).encode())
    with Client(url, "tok") as c, pytest.raises(cls) as info:
        c.get("run_1")
    assert info.value.status == status
    assert info.value.reason == f"because \x1b[2J {status}"
    assert info.value.retry_after == 7.0


def test_a_422_names_the_field(hostile):
    url, H = hostile
    detail = [{"loc": ["body", "timeout"], "msg": "Input should be greater than 0"}]
    H.routes["/v1/runs/run_1"] = (422, {}, json.dumps({"detail": detail}).encode())
    with Client(url, "tok") as c, pytest.raises(errors.ValidationFailed) as info:
        c.get("run_1")
    assert info.value.reason == "timeout: Input should be greater than 0"


def test_an_answer_outside_the_contract_is_a_server_error(hostile):
    url, H = hostile
    H.routes["/v1/runs/run_1"] = (200, {}, json.dumps({**RUN, "status": "pwned"}).encode())
    with Client(url, "tok") as c, pytest.raises(errors.ServerError):
        c.get("run_1")


def test_run_ids_are_quoted_into_one_path_segment(hostile):
    url, H = hostile
    H.routes["/v1/runs/run_1"] = (200, {}, json.dumps(RUN).encode())
    with Client(url, "tok") as c, pytest.raises(errors.NotFound):
        c.get("../tokens")
    assert H.seen[-1][0] == "/v1/runs/..%2Ftokens"


def test_environment_supplies_server_and_token(hostile, monkeypatch):
    url, H = hostile
    H.routes["/v1/runs/run_1"] = (200, {}, json.dumps(RUN).encode())
    monkeypatch.setenv("SANDBOX_SERVER", url)
    monkeypatch.setenv("SANDBOX_TOKEN", "sbx_env")
    with Client() as c:
        assert c.get("run_1").id == "run_1"
    assert H.seen[-1][1]["Authorization"] == "Bearer sbx_env"


def test_no_server_is_connection_failed(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"http://127.0.0.1:{port}", "t") as c, pytest.raises(errors.ConnectionFailed):
        c.get("run_1")


def test_bad_url_is_invalid_argument():
    with pytest.raises(errors.InvalidArgument):
        Client("file:///etc/passwd", "t")


# -- Server-Sent Events -------------------------------------------------------

def _wire(events: list[tuple[str, str, object]]) -> str:
    """What an honest server sends: the data as JSON, so no CR/LF reaches the frame."""
    return "".join(f"id: {i}\nevent: {t}\ndata: {json.dumps(d)}\n\n" for i, t, d in events)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["stdout", "stderr", "log"]),
                          st.text(alphabet=st.characters(codec="utf-8"))), max_size=8))
def test_sse_round_trip_whatever_the_run_printed(chunks):
    wire = _wire([(str(i + 1), t, {"text": text}) for i, (t, text) in enumerate(chunks)]
                 + [(str(len(chunks) + 1), "exit", {"status": "ok"})])
    import io
    got = list(sse.parse(io.StringIO(wire).read().splitlines()))
    assert [(e.event, e.data) for e in got] == \
        [(t, {"text": text}) for t, text in chunks] + [("exit", {"status": "ok"})]
    assert [e.id for e in got] == [str(i + 1) for i in range(len(chunks) + 1)]


def test_sse_events_resume_with_last_event_id(hostile):
    url, H = hostile
    first = _wire([("1", "queued", {}), ("2", "stdout", {"text": "a\r\nevent: exit\n\n"})])
    H.routes["/v1/runs/run_1/events"] = (200, {"Content-Type": "text/event-stream"},
                                         first.encode())
    H.routes["/v1/runs/run_1"] = (200, {}, json.dumps({**RUN, "status": "running"}).encode())

    class Once(H):  # type: ignore[misc,valid-type]
        pass
    got = []
    with Client(url, "tok") as c:
        it = c.events("run_1")
        got.append(next(it))
        got.append(next(it))
        # the stream ended without exit while the run is running: the client
        # reconnects, saying where it was
        H.routes["/v1/runs/run_1/events"] = (200, {}, _wire([("3", "exit", {"status": "ok"})])
                                             .encode())
        got.extend(it)
    assert [e.event for e in got] == ["queued", "stdout", "exit"]
    assert got[1].data == {"text": "a\r\nevent: exit\n\n"}
    ev_requests = [h for p, h in H.seen if p.endswith("/events")]
    assert "Last-Event-ID" not in ev_requests[0]
    assert ev_requests[-1]["Last-Event-ID"] == "2"
