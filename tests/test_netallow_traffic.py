"""mode = "allowlist" with real clients: curl, urllib, requests and pip reach an allowed
server through the monitor's proxy (HTTP_PROXY & co.), and a refused one fails cleanly.

Servers are started by the test on 127.0.0.1 and allowed by explicit address;
pip installs from a small simple index (PEP 503) serving a wheel built here.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import shutil
import threading
import zipfile
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation


def build_wheel() -> tuple[str, bytes]:
    name = "tinypkg-0.1-py3-none-any.whl"
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\n"
                                      b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("tinypkg-0.1.dist-info/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr("tinypkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    return name, buf.getvalue()


class Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.hits.append(self.path)
        name, data = srv.wheel
        if self.path.rstrip("/") == "/simple/tinypkg":
            sha = hashlib.sha256(data).hexdigest()
            body = (f'<html><body><a href="/files/{name}#sha256={sha}">{name}</a>'
                    f"</body></html>").encode()
            ctype = "text/html"
        elif self.path == f"/files/{name}":
            body, ctype = data, "application/octet-stream"
        elif self.path == "/hello":
            body, ctype = b"hello through the proxy", "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def index():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    srv.daemon_threads = True
    srv.hits = []
    srv.wheel = build_wheel()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def spawn(tmp_path, argv, allow):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    pol = load_policy("default")
    pol = pol.replace(network=replace(pol.network, mode="allowlist", allow=tuple(allow)))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    return la.spawn(argv, policy=pol, timeout=120)


CLIENTS = r"""
import json, sys, urllib.request, urllib.error
import requests
url, refused = sys.argv[1], sys.argv[2]
out = {}
out["urllib"] = urllib.request.urlopen(url, timeout=20).read().decode()
out["requests"] = requests.get(url, timeout=20).text
try:
    urllib.request.urlopen(refused, timeout=20)
except urllib.error.HTTPError as e:
    out["urllib_refused"] = [e.code, e.read().decode()]
r = requests.get(refused, timeout=20)
out["requests_refused"] = [r.status_code, r.headers.get("X-Sandbox-Proxy")]
print(json.dumps(out))
"""


def test_curl_urllib_and_requests_through_the_proxy(tmp_path, py, index):
    if shutil.which("curl") is None:
        pytest.fail("curl is required (scripts/install.sh installs it)")
    port = index.server_address[1]
    url, refused = f"http://127.0.0.1:{port}/hello", f"http://127.0.0.1:{port + 1}/x"
    allow = [f"127.0.0.1:{port}"]
    r = spawn(tmp_path, ["curl", "-sS", "--max-time", "20", url], allow)
    assert (r.status, r.stdout) == ("ok", "hello through the proxy"), (r.reason, r.stderr)
    r = spawn(tmp_path, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                         "--max-time", "20", refused], allow)
    assert r.stdout == "403", (r.stdout, r.stderr)
    # curl through SOCKS5 (ALL_PROXY) too
    r = spawn(tmp_path, ["curl", "-sS", "--max-time", "20", "--proxy",
                         "socks5h://127.0.0.1:3128", url], allow)
    assert (r.status, r.stdout) == ("ok", "hello through the proxy"), (r.reason, r.stderr)
    r = spawn(tmp_path, [py, "-c", CLIENTS, url, refused], allow)
    assert r.status == "ok", (r.reason, r.stderr[-2000:])
    got = json.loads(r.stdout)
    assert got["urllib"] == got["requests"] == "hello through the proxy"
    assert got["urllib_refused"][0] == 403 and "no allow entry" in got["urllib_refused"][1]
    assert got["requests_refused"] == [403, "refused"]
    net = r.audit["network"]
    assert (net["allowed"], net["denied"]) == (2, 2), net
    assert net["bytes_down"] > 0 and net["bytes_up"] > 0
    assert [f"127.0.0.1:{port + 1}"] == net["denied_targets"]


def test_pip_installs_from_a_local_index_through_the_proxy(tmp_path, py, index):
    port = index.server_address[1]
    code = ("import runpy, sys; sys.argv = ['pip'] + sys.argv[1:]; "
            "runpy.run_module('pip', run_name='__main__')")
    argv = [py, "-c", code, "download", "--isolated", "--no-deps", "--no-cache-dir",
            "--disable-pip-version-check", "-d", "/tmp/dl",
            "--index-url", f"http://127.0.0.1:{port}/simple/", "tinypkg"]
    r = spawn(tmp_path, argv, [f"127.0.0.1:{port}"])
    assert r.status == "ok", (r.reason, r.stdout[-2000:], r.stderr[-2000:])
    assert "Saved /tmp/dl/tinypkg-0.1-py3-none-any.whl" in r.stdout, r.stdout
    assert f"/files/{index.wheel[0]}" in index.hits
    # and refused when the index is not in the allowlist: pip fails, nothing was fetched
    index.hits.clear()
    r = spawn(tmp_path, argv, [f"127.0.0.1:{port + 1}"])
    assert r.status == "error" and index.hits == [], (r.status, index.hits)
    assert any(d["path"] == f"127.0.0.1:{port}" for d in r.denied)


def test_a_refused_connection_gets_a_hint(tmp_path, index):
    port = index.server_address[1]
    r = spawn(tmp_path, ["curl", "-fsS", "--max-time", "20", f"http://127.0.0.1:{port + 1}/x"],
              [f"127.0.0.1:{port}"])
    assert r.status != "ok"
    assert any(f'allow = ["127.0.0.1:{port + 1}"]' in h and f"--allow 127.0.0.1:{port + 1}" in h
               for h in r.hints), r.hints
    r = spawn(tmp_path, ["curl", "-fsS", "--noproxy", "*", "--max-time", "20",
                         f"http://127.0.0.1:{port}/hello"], [f"127.0.0.1:{port}"])
    assert r.status != "ok" and index.hits == []
    assert any("ignored HTTP_PROXY" in h for h in r.hints), r.hints
