"""A real `sandbox serve` on 127.0.0.1 for the browser tests: the CLI in a
child process, on a free port, with a fresh state directory."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    admin_token: str
    state: str
    proc: subprocess.Popen

    def api(self, method: str, path: str, body: object = None, token: str | None = None,
            timeout: float = 60) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "authorization": f"Bearer {token or self.admin_token}",
            "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def submit(self, body: dict, token: str | None = None) -> dict:
        return self.api("POST", "/v1/runs", body, token)

    def wait(self, run_id: str, seconds: float = 60) -> dict:
        return self.api("GET", f"/v1/runs/{run_id}?wait={seconds}", timeout=seconds + 30)


def start(extra: list[str] | None = None) -> Server:
    state = tempfile.mkdtemp(prefix="sbx-ui-state-")
    port = free_port()
    cmd = [sys.executable, "-m", "sandbox", "serve", "--listen", f"127.0.0.1:{port}",
           "--state", os.path.join(state, "s")] + (extra or [])
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(os.path.join(state, "serve.log"), "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError("sandbox serve exited: "
                               + open(os.path.join(state, "serve.log")).read()[-2000:])
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2).read()
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.2)
    with open(os.path.join(state, "s", "admin.token")) as f:
        token = f.read().strip()
    return Server(url, token, state, proc)


def stop(server: Server) -> None:
    try:
        os.killpg(server.proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
