"""Policies, audit, suggest, tokens and metrics routes against a real server."""
from __future__ import annotations


def test_policies_list_show_check_explain(http) -> None:
    names = {p["name"] for p in http.get("/v1/policies").json()["items"]}
    assert {"default", "strict"} <= names
    strict = http.get("/v1/policies/strict").json()
    assert strict["name"] == "strict" and strict["policy"]["network"]["mode"] == "none"
    assert http.get("/v1/policies/..%2f..%2fetc%2fpasswd").status_code == 404
    bad = http.post("/v1/policies/check", json={"policy_inline": {
        "name": "b", "limits": {"memory": "lots"}}}).json()
    assert bad["ok"] is False and any("memory" in e for e in bad["errors"])
    ok = http.post("/v1/policies/check", json={"policy": "strict"}).json()
    assert ok["ok"] is True and ok["within_ceiling"] is None     # the admin has no ceiling
    ex = http.post("/v1/policies/explain", json={"policy": "strict", "operation": "read",
                                                  "path": "/etc/shadow"}).json()
    assert ex["allowed"] is False and ex["rule"]
    ex = http.post("/v1/policies/explain", json={"policy": "strict", "operation": "write",
                                                  "path": "/run/sandbox/output/x"}).json()
    assert ex["allowed"] is True


def test_check_compares_with_the_tokens_ceiling(service_server, http) -> None:
    made = http.post("/v1/tokens", json={"name": "ci", "ceiling": "strict"})
    assert made.status_code == 201, made.text
    with service_server.client(made.json()["token"]) as c:
        r = c.post("/v1/policies/check", json={"policy": "default"}).json()
        assert r["ok"] and r["within_ceiling"] is False and "limits." in r["ceiling_reason"]
        assert c.get("/v1/tokens").status_code == 403
        assert c.get("/metrics").status_code == 403
    assert http.delete(f"/v1/tokens/{made.json()['id']}").json()["revoked_at"]
    with service_server.client(made.json()["token"]) as c:
        assert c.get("/v1/runs").status_code == 401
    listed = http.get("/v1/tokens").json()
    assert made.json()["token"] not in str(listed) and {t["name"] for t in listed} >= {"ci"}


def test_audit_denied_and_suggest_for_a_strict_run(http) -> None:
    run = http.post("/v1/runs", params={"wait": 60}, json={
        "policy": "strict", "argv": ["sh", "-c", "cat /etc/shadow; cat /etc/hostname; true"]}
    ).json()
    assert run["status"] == "ok", run
    denied = http.get(run["links"]["audit"], params={"denied": 1}).json()
    assert denied["items"] and all(r["verdict"] == "denied" for r in denied["items"])
    assert any(r["path"] == "/etc/shadow" for r in denied["items"]), denied
    everything = http.get(run["links"]["audit"]).json()
    assert len(everything["items"]) > len(denied["items"])
    sug = http.get(f"/v1/runs/{run['id']}/policy/suggest")
    assert sug.status_code == 200, sug.text
    assert "[filesystem]" in sug.json()["toml"]


def test_metrics_in_prometheus_format(http) -> None:
    http.post("/v1/runs", params={"wait": 60}, json={"argv": ["true"]})
    text = http.get("/metrics").text
    assert 'sandbox_runs{status="ok"} 1.0' in text
    assert "sandbox_queue_depth 0.0" in text and "sandbox_live_sandboxes" in text
    assert 'sandbox_run_duration_seconds_count{status="ok"} 1.0' in text


def test_explain_knows_the_copy_on_write_work_directory(service_server, http) -> None:
    """A run of `default` writes in its work directory (its own layer over it):
    explain said "denied" there, as `sandbox policy explain` once did
    (tests/test_policy_explain_cow.py). It now says where the write goes, for the
    stand-in ${WORKDIR}, never looking at the server's disk."""
    import os

    for op in ("write", "create", "delete"):
        ex = http.post("/v1/policies/explain", json={
            "policy": "default", "operation": op, "path": "/run/sandbox/input/sub/x"}).json()
        assert ex["allowed"] is True, ex
        assert "copy-on-write" in ex["rule"] and "own layer" in ex["reason"], ex
    # what a run does agrees: it writes in its work directory, and the server's copy
    # of its input directory stays as it was (the input files themselves are 0400)
    run = http.post("/v1/runs", params={"wait": 120}, json={
        "policy": "default", "argv": ["sh", "-c", "echo run > new.txt && cat new.txt"],
        "files": [{"name": "in.txt", "content_b64": "aG9zdAo="}]}).json()
    assert run["status"] == "ok" and run["result"]["stdout"] == "run\n", run
    inputs = os.path.join(service_server.state, "runs", run["id"], "input")
    assert sorted(os.listdir(inputs)) == ["in.txt"]
    # strict has no overlay, a read is not a write, and a path outside stays denied
    for body in ({"policy": "strict", "operation": "write", "path": "/run/sandbox/input/x"},
                 {"policy": "default", "operation": "write", "path": "/run/sandbox/inputx"},
                 {"policy": "default", "operation": "write", "path": "/usr/x"}):
        ex = http.post("/v1/policies/explain", json=body).json()
        assert ex["allowed"] is False and "own layer" not in ex["reason"], (body, ex)
    # an inline policy that grants the work directory itself is the host's directory
    ex = http.post("/v1/policies/explain", json={
        "policy_inline": {"name": "w", "extends": ["default"],
                          "filesystem": {"write": ["${WORKDIR}"]}},
        "operation": "write", "path": "/run/sandbox/input/x"}).json()
    assert ex["allowed"] is True and "own layer" not in ex["reason"], ex


def test_explain_as_in_a_run_agrees_with_its_audit(service_server, http) -> None:
    """The web page's Explain on an audit row asked about the run's real input and
    output paths with ${WORKDIR} and ${OUTPUT} as stand-ins, so it named another rule
    (or "denied") for a file the run read from its own input directory. With `run`,
    explain takes that run's directories, and agrees with its audit; another
    tenant's run is a 404."""
    from service.helpers import make_token
    run = http.post("/v1/runs", params={"wait": 120}, json={
        "policy": "strict", "argv": ["sh", "-c", 'cat in.txt; echo o > "$SANDBOX_OUTPUT/o"'],
        "files": [{"name": "in.txt", "content_b64": "aG9zdAo="}]}).json()
    assert run["status"] == "ok", run
    records = http.get(f"/v1/runs/{run['id']}/audit").json()["items"]
    mine = [r for r in records if r.get("path", "").endswith(("/input/in.txt", "/output/o"))
            and r.get("operation") in ("read", "create")]
    assert {r["operation"] for r in mine} == {"read", "create"}, records[:20]
    for rec in mine:
        body = {"policy": "strict", "operation": rec["operation"], "path": rec["path"]}
        ex = http.post("/v1/policies/explain", json={**body, "run": run["id"]}).json()
        assert ex["allowed"] is True and ex["rule"] == rec["rule"], (rec, ex)
        stand_in = http.post("/v1/policies/explain", json=body).json()
        assert stand_in["rule"] != rec["rule"], (rec, stand_in)
    with service_server.client(make_token(service_server, "other")) as c:
        r = c.post("/v1/policies/explain", json={"policy": "strict", "path": "/x",
                                                 "run": run["id"]})
        assert r.status_code == 404, r.text
