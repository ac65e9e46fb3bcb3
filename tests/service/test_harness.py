"""The server fixture itself: it waits for /healthz, kill9() leaves nothing of the
server's process group, restart() keeps the port and the state, stop() is final.

Run against a stand-in for `sandbox serve` (a few lines of http.server) so the
harness is proven apart from the service it hosts."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.server import Server, make_server

FAKE = r'''
import http.server, os, sys, subprocess
port = int(sys.argv[1]); state = sys.argv[2]
os.makedirs(state, exist_ok=True)
open(os.path.join(state, "admin.token"), "w").write("tok\n")
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # fake-serve-child"])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


class FakeServer(Server):
    def command(self) -> list[str]:
        return [sys.executable, "-c", FAKE, str(self.port), self.state]


def _fake(tmp_path: Path) -> FakeServer:
    base = make_server(tmp_path)
    return FakeServer(state=base.state, home=base.home)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid and _alive(int(name)):
                    out.append(int(name))
            except OSError:
                pass
    return out


def _group_after_kill(pgid: int) -> list[int]:
    """SIGKILL is delivered asynchronously: give the group a moment to die."""
    deadline = time.monotonic() + 10
    while (left := _group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_start_kill9_restart_stop(tmp_path):
    s = _fake(tmp_path).start()
    try:
        assert httpx.get(f"{s.url}/healthz").status_code == 200
        assert s.admin_token == "tok"
        assert s.auth() == {"Authorization": "Bearer tok"}
        port, pgid = s.port, s.proc.pid
        assert len(_group(pgid)) == 2          # the server and its child
        s.kill9()
        assert _group_after_kill(pgid) == []              # the whole group, not only the leader
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{s.url}/healthz", timeout=2)
        s.start()
        assert s.port == port
        assert httpx.get(f"{s.url}/healthz").status_code == 200
        pgid = s.proc.pid
    finally:
        s.stop()
    assert _group_after_kill(pgid) == []
    s.stop()                                   # idempotent


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path):
    class Broken(FakeServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import sys; print('no such flag'); sys.exit(2)"]
    base = make_server(tmp_path)
    with pytest.raises(RuntimeError, match="no such flag"):
        Broken(state=base.state, home=base.home).start()
