"""Inputs (multipart and base64) and outputs (list, download) against a real server,
with hostile names and planted links."""
from __future__ import annotations

import json
import os

import pytest


def test_multipart_upload_then_download_outputs(http) -> None:
    req = {"argv": ["sh", "-c", 'cat data/in.bin > "$SANDBOX_OUTPUT/copy.bin"; '
                    'mkdir "$SANDBOX_OUTPUT/sub"; echo hi > "$SANDBOX_OUTPUT/sub/a.txt"']}
    payload = bytes(range(256)) * 10
    r = http.post("/v1/runs", params={"wait": 60}, data={"request": json.dumps(req)},
                  files=[("files", ("data/in.bin", payload, "application/octet-stream"))])
    assert r.status_code == 200, r.text
    run = r.json()
    assert run["status"] == "ok", run
    listing = http.get(run["links"]["files"]).json()["items"]
    assert {(i["path"], i["kind"]) for i in listing} == {
        ("copy.bin", "file"), ("sub", "dir"), ("sub/a.txt", "file")}
    got = http.get(run["links"]["files"] + "/copy.bin")
    assert got.status_code == 200 and got.content == payload
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert http.get(run["links"]["files"] + "/sub/a.txt").content == b"hi\n"


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/../../x", "a//b", "./a",
                                  "a\nb", ""])
def test_upload_names_that_would_leave_the_input_directory_are_422(http, name) -> None:
    if "\n" not in name:     # httpx percent-encodes a newline in a multipart filename
        r = http.post("/v1/runs", data={"request": json.dumps({"argv": ["true"]})},
                      files=[("files", (name, b"x", "text/plain"))])
        assert r.status_code == 422, r.text
    r = http.post("/v1/runs", json={"argv": ["true"], "files": [{"name": name,
                                                                 "content_b64": ""}]})
    assert r.status_code == 422, r.text


def test_hostile_outputs_are_never_followed_and_served_inert(service_server, http) -> None:
    """A symlink to /etc/shadow and to another run's directory, a file named like a
    path escape, and a page that would run script: listed, never followed, served as
    an attachment."""
    other = http.post("/v1/runs", params={"wait": 60}, json={"argv": [
        "sh", "-c", 'echo other-secret > "$SANDBOX_OUTPUT/s.txt"']}).json()
    other_dir = os.path.join(service_server.state, "runs", other["id"], "output")
    assert os.path.exists(os.path.join(other_dir, "s.txt"))
    script = (f'cd "$SANDBOX_OUTPUT"; ln -s /etc/shadow shadow; ln -s {other_dir} peer; '
              'ln -s / root; printf "<script>alert(1)</script>" > page.html; '
              'mkdir -p d; echo x > "d/..%2f..%2fx"')
    run = http.post("/v1/runs", params={"wait": 60}, json={"argv": ["sh", "-c", script]}).json()
    assert run["status"] == "ok", run
    kinds = {i["path"]: i["kind"] for i in http.get(run["links"]["files"]).json()["items"]}
    for link in ("shadow", "peer", "root"):
        assert kinds.get(link) in ("symlink", None), kinds   # the copy-out may drop links
    for path in ("shadow", "peer/s.txt", "root/etc/shadow", "root/etc/passwd", "../../x",
                 "..%2f..%2fetc%2fpasswd", "d/../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd"):
        r = http.get(run["links"]["files"] + "/" + path)
        assert r.status_code == 404, (path, r.status_code, r.text[:200])
        assert b"other-secret" not in r.content and b"root:" not in r.content
    page = http.get(run["links"]["files"] + "/page.html")
    assert page.status_code == 200
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment")
    weird = http.get(run["links"]["files"] + "/d/..%252f..%252fx")
    assert weird.status_code == 200 and weird.content == b"x\n"


def test_a_runs_stdout_stderr_and_logs_download(service_server, http) -> None:
    """GET /v1/runs/{id}/streams/{stdout,stderr,logs}: the result's own text, as an
    attachment; another tenant's run is a 404, another name a 422."""
    from service.helpers import make_token
    run = http.post("/v1/runs", params={"wait": 60}, json={
        "argv": ["sh", "-c", "printf '<b>out\\n'; printf 'err\\377' >&2"]}).json()
    assert run["status"] == "ok", run
    base = f"/v1/runs/{run['id']}/streams"
    out = http.get(f"{base}/stdout")
    assert out.status_code == 200 and out.text == run["result"]["stdout"] == "<b>out\n"
    assert out.headers["content-type"].startswith("text/plain")
    assert out.headers["content-disposition"].startswith("attachment;")
    assert out.headers["x-content-type-options"] == "nosniff"
    assert http.get(f"{base}/stderr").content.decode("utf-8", "replace") == \
        run["result"]["stderr"]
    assert http.get(f"{base}/logs").status_code == 200
    assert http.get(f"{base}/store").status_code == 422
    with service_server.client(make_token(service_server, "other")) as c:
        assert c.get(f"{base}/stdout").status_code == 404
