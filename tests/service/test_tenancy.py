"""Tenant isolation judged from the host: a run of token B cannot read token A's
inputs or outputs, through the API or from inside its sandbox."""
from __future__ import annotations

import os


def test_a_sandbox_cannot_read_another_tenants_files(service_server, http) -> None:
    a = http.post("/v1/tokens", json={"name": "a", "ceiling": "default"}).json()
    b = http.post("/v1/tokens", json={"name": "b", "ceiling": "default"}).json()
    with service_server.client(a["token"]) as ca, service_server.client(b["token"]) as cb:
        ra = ca.post("/v1/runs", params={"wait": 60}, json={
            "argv": ["sh", "-c", 'echo A-OUT-7f3e > "$SANDBOX_OUTPUT/out.txt"'],
            "files": [{"name": "in.txt", "content_b64": "QS1JTi05YzFkCg=="}]}).json()
        assert ra["status"] == "ok", ra
        run_dir = os.path.join(service_server.state, "runs", ra["id"])
        with open(os.path.join(run_dir, "output", "out.txt")) as f:
            assert f.read() == "A-OUT-7f3e\n"       # it is there, on the host
        paths = [os.path.join(run_dir, "output", "out.txt"),
                 os.path.join(run_dir, "input", "in.txt"),
                 os.path.join(service_server.state, "service.db"),
                 os.path.join(service_server.state, "admin.token")]
        script = "; ".join(f"cat {p}; ls {os.path.dirname(p)}" for p in paths) + \
            f"; ls {service_server.state}; ls {service_server.state}/runs; true"
        rb = cb.post("/v1/runs", params={"wait": 60}, json={"argv": ["sh", "-c", script]}
                     ).json()
        out = rb["result"]["stdout"] + rb["result"]["stderr"]
        assert "A-OUT" not in out and "A-IN" not in out and "sbx_" not in out, out
        # A's run id shows only in the errors of B's own commands, never in a listing
        assert all("No such file" in line for line in out.splitlines() if ra["id"] in line)
        assert "No such file" in out
        # nor through the API
        for path in (f"/v1/runs/{ra['id']}", f"/v1/runs/{ra['id']}/files",
                     f"/v1/runs/{ra['id']}/files/out.txt", f"/v1/runs/{ra['id']}/events",
                     f"/v1/runs/{ra['id']}/audit"):
            assert cb.get(path).status_code == 404, path
        # nor by asking for a policy that would show it (over the ceiling, and the state
        # check refuses it for any token: a glob whose prefix contains the state dir)
        for grant in (run_dir, os.path.dirname(service_server.state) + "/*"):
            r = cb.post("/v1/runs", json={"argv": ["true"], "policy_inline": {
                "name": "peek", "extends": ["default"], "filesystem": {"read": [grant]}}})
            assert r.status_code == 403, r.text
            r = http.post("/v1/runs", json={"argv": ["true"], "policy_inline": {
                "name": "peek", "extends": ["default"], "filesystem": {"read": [grant]}}})
            assert r.status_code == 403 and "state directory" in r.text, r.text
