"""Retention (--retain, sandbox gc --service-state) deletes ended runs with their
files and records, and nothing else."""
from __future__ import annotations

import os
import subprocess
import sys
import time


def _files_under(root: str) -> set[str]:
    out = set()
    for d, _dirs, files in os.walk(root):
        for f in files:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


def test_retain_deletes_ended_runs_only(start_server) -> None:
    srv = start_server("--retain", "3s", "--max-concurrent", "1")
    with srv.client() as http:
        old = http.post("/v1/runs", params={"wait": 60}, json={
            "policy": "strict", "argv": ["sh", "-c", 'echo x > "$SANDBOX_OUTPUT/o"'],
            "files": [{"name": "i", "content_b64": "eA=="}]}).json()
        assert old["status"] == "ok", old
        audit_file = os.path.join(srv.state, "audit", old["result"]["run_id"] + ".sqlite")
        assert os.path.exists(audit_file)
        running = http.post("/v1/runs", json={"argv": ["sleep", "60"]}).json()
        queued = http.post("/v1/runs", json={"argv": ["true"]}).json()
        deadline = time.monotonic() + 60
        while http.get(f"/v1/runs/{old['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the ended run was never deleted"
            time.sleep(0.5)
        assert not os.path.exists(os.path.join(srv.state, "runs", old["id"]))
        assert not os.path.exists(audit_file)
        assert http.get(f"/v1/runs/{running['id']}").json()["status"] == "running"
        assert http.get(f"/v1/runs/{queued['id']}").json()["status"] == "queued"
        assert os.path.isdir(os.path.join(srv.state, "runs", queued["id"], "input"))
        for name in ("service.db", "admin.token"):
            assert os.path.exists(os.path.join(srv.state, name))
        http.post(f"/v1/runs/{running['id']}/cancel")


def test_sandbox_gc_applies_the_servers_retention(start_server) -> None:
    srv = start_server("--retain", "1h")
    with srv.client() as http:
        ids = [http.post("/v1/runs", params={"wait": 60}, json={"argv": ["true"]}).json()["id"]
               for _ in range(2)]
    srv.stop()
    before = _files_under(srv.state)
    gc = [sys.executable, "-m", "sandbox", "gc", "--state", srv.state]
    env = {**os.environ, "SANDBOX_HOME": srv.home}
    p = subprocess.run(gc, capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and "service: deleted 0 run(s)" in p.stdout, p.stdout + p.stderr
    assert _files_under(srv.state) == before          # nothing is an hour old
    p = subprocess.run(gc + ["--older-than", "0s"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0 and "service: deleted 2 run(s)" in p.stdout, p.stdout + p.stderr
    after = _files_under(srv.state)
    assert not any(i in f for f in after for i in ids)
    assert {"service.db", "admin.token"} <= after
    assert not [f for f in after if f.startswith("audit/") and f.endswith(".sqlite")], after
    srv.start()
    with srv.client() as http:
        assert http.get("/v1/runs").json()["items"] == []
