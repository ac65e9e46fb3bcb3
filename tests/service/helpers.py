"""Small helpers of the service tests: tokens made with the real CLI, clients."""
from __future__ import annotations

import json
import subprocess
import sys

from service.server import Server

from sandbox.client.sync import Client

# The workflow of the end-to-end tests: actions shipped in the package
# (sandbox.demos.spawn_process), an IPC message, logs and an output file.
WORKFLOW = {
    "id": "svc-e2e", "name": "svc-e2e",
    "imports": ["sandbox.demos.spawn_process"],
    "store": {"items": [1, 2, 3], "multiplier": 10},
    "stages": [{"id": "process", "actions": ["demo.process_items"]},
               {"id": "output", "actions": ["demo.write_report"]}],
}


def make_token(srv: Server, name: str, *args: str) -> str:
    """A new token made by `sandbox token create` on the server's state; its secret."""
    p = subprocess.run([sys.executable, "-m", "sandbox", "token", "--state", srv.state,
                        "create", "--json", "--name", name, *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return str(json.loads(p.stdout)["token"])


def client(srv: Server, token: str | None = None) -> Client:
    return Client(srv.url, token or srv.admin_token)


def cli(srv: Server, *args: str, token: str | None = None, input: bytes | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """`sandbox ARGS` with SANDBOX_SERVER/SANDBOX_TOKEN pointing at `srv`."""
    import os
    env = {**os.environ, "SANDBOX_SERVER": srv.url, "SANDBOX_TOKEN": token or srv.admin_token}
    return subprocess.run([sys.executable, "-m", "sandbox", *args], env=env, input=input,
                          capture_output=True, timeout=timeout)

