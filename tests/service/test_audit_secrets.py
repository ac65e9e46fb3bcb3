"""secret_env values are masked in the audit records of a run (probe2 finding 11).

The RunResult was masked, but the audit store kept the paths the program
opened byte for byte, so `GET /v1/runs/{id}/audit` (and the suggested policy)
handed the secret to whoever read them, and `grep` found it in the state
directory. Judged from the server: the API's answers and the bytes on disk.
"""
from __future__ import annotations

import os

from service.helpers import make_token

SECRET = "topsecretvalue123"


def _state_bytes(state: str) -> list[str]:
    """Files under the state directory that hold the secret."""
    hits = []
    for d, _dirs, files in os.walk(state):
        for f in files:
            path = os.path.join(d, f)
            try:
                with open(path, "rb") as fh:
                    if SECRET.encode() in fh.read():
                        hits.append(path)
            except OSError:
                pass
    return hits


def test_audit_records_never_hold_a_secret_value(server) -> None:
    tok = make_token(server, "hank")
    with server.client(tok) as c:
        v = c.post("/v1/runs", params={"wait": 60}, json={
            "argv": ["sh", "-c", "cat /root/$K /etc/shadow-$K 2>/dev/null; "
                     "ls /opt/$K-dir 2>/dev/null; echo $K"],
            "policy": "strict", "secret_env": {"K": SECRET}}).json()
        assert v["status"] in ("ok", "error"), v
        assert v["result"]["stdout"] == "[secret]\n"
        audit = c.get(f"/v1/runs/{v['id']}/audit").json()
        assert audit["items"], audit
        paths = [r["path"] for r in audit["items"]]
        assert SECRET not in str(paths), [p for p in paths if SECRET in p]
        assert any("[secret]" in p for p in paths), paths     # the opens are recorded
        assert SECRET not in str(audit), audit
        denied = c.get(f"/v1/runs/{v['id']}/audit", params={"denied": 1}).json()
        assert SECRET not in str(denied) and denied["items"], denied
        suggested = c.get(f"/v1/runs/{v['id']}/policy/suggest")
        assert suggested.status_code == 200 and SECRET not in suggested.text
    assert _state_bytes(server.state) == []
