"""Issue 16 item 8: tenant isolation (a run of token A tries to read token B's
inputs and outputs from inside its sandbox, and through the API: it fails),
and idempotent resubmission (same key, same run, even raced)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from service.helpers import client, make_token

from sandbox.client import errors

SECRET = "B-SECRET-4f1c9e"


def _hunt(state: str, run_id: str) -> list[str]:
    """A's program: every way in to B's files it can think of."""
    runs = os.path.join(state, "runs")
    b = os.path.join(runs, run_id)
    return ["sh", "-c", "; ".join([
        f"cat {b}/output/secret.txt {b}/input/in.txt",
        f"ls -la {runs} {b} {b}/output {b}/input {state}",
        f"cat {state}/admin.token {state}/service.db",
        f"grep -r {SECRET} {state} /tmp /var/tmp 2>/dev/null | head -5",
        f"find / -xdev -name secret.txt 2>/dev/null | head -5",
        "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -a SECRET",
        "true"])]


def test_a_sandbox_of_token_a_cannot_read_token_b_runs(server):
    ta, tb = make_token(server, "tenant-a"), make_token(server, "tenant-b")
    with client(server, tb) as cb:
        b_done = cb.run(["sh", "-c", f'printf {SECRET} > "$SANDBOX_OUTPUT/secret.txt"; '
                         "cat in.txt"], files={"in.txt": SECRET.encode()})
        assert b_done.status == "ok", b_done.reason
        assert b_done.result["stdout"] == SECRET      # B's own run reads its input
        b_live = cb.submit(["sh", "-c", f'printf {SECRET} > "$SANDBOX_OUTPUT/secret.txt"; '
                            f"export X={SECRET}; sleep 30"], secret_env={"TOKEN_B": SECRET},
                           files={"in.txt": SECRET.encode()})
    # the secret is on the host where A would look for it
    with open(os.path.join(server.state, "runs", b_done.id, "output", "secret.txt")) as f:
        assert f.read() == SECRET
    with client(server, ta) as ca:
        for target in (b_done.id, b_live.id):
            run = ca.run(_hunt(server.state, target))
            seen = (run.result or {}).get("stdout", "") + (run.result or {}).get("stderr", "")
            assert run.result is not None and run.result.get("exit_code") == 0, run
            assert SECRET not in seen, seen[-2000:]
            assert server.admin_token not in seen
        # and through the API: B's runs do not exist for A
        for target in (b_done.id, b_live.id):
            with pytest.raises(errors.NotFound):
                ca.get(target)
            with pytest.raises(errors.NotFound):
                ca.cancel(target)
        assert {r.id for r in ca.list().items}.isdisjoint({b_done.id, b_live.id})
    with client(server, tb) as cb:
        cb.cancel(b_live.id)


def test_token_a_cannot_fetch_token_b_files_or_audit(server):
    ta, tb = make_token(server, "tenant-a"), make_token(server, "tenant-b")
    with client(server, tb) as cb:
        b = cb.run(["sh", "-c", f'printf {SECRET} > "$SANDBOX_OUTPUT/secret.txt"'])
        assert cb.download(b.id, "secret.txt") == SECRET.encode()    # B can
    with client(server, ta) as ca:
        for call in (lambda: ca.files(b.id), lambda: ca.download(b.id, "secret.txt"),
                     lambda: ca.audit(b.id)):
            with pytest.raises(errors.NotFound):
                call()


def test_token_a_cannot_follow_token_b_events(server):
    ta, tb = make_token(server, "tenant-a"), make_token(server, "tenant-b")
    with client(server, tb) as cb:
        b = cb.run(["sh", "-c", f"echo {SECRET}"])
        assert any(e.event == "stdout" for e in cb.events(b.id))      # B can
    with client(server, ta) as ca:
        with pytest.raises(errors.NotFound):
            list(ca.events(b.id))
        with ca._http.stream("GET", "/v1/events", timeout=5) as r:   # A's live status stream
            assert r.status_code == 200
        assert SECRET  # B's run ended before; its events were never A's


def test_idempotent_resubmission_returns_the_same_run(server):
    with client(server) as c:
        first = c.submit(["sh", "-c", "echo once"], idempotency_key="key-1")
        again = c.submit(["sh", "-c", "echo once"], idempotency_key="key-1")
        assert again.id == first.id
        other = c.submit(["sh", "-c", "echo once"], idempotency_key="key-2")
        assert other.id != first.id
        assert c.wait(first.id, deadline=120).result["stdout"] == "once\n"
        assert c.submit(["sh", "-c", "echo once"], idempotency_key="key-1").id == first.id
        ids = {r.id for r in c.list().items}
    assert ids == {first.id, other.id}


def test_raced_resubmissions_make_one_run(server):
    def submit(_: int) -> str:
        with client(server) as c:
            return c.submit(["true"], idempotency_key="raced").id
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(16)))
    assert len(ids) == 1
    with client(server) as c:
        assert [r.id for r in c.list().items] == list(ids)


def test_keys_are_per_token(server):
    ta, tb = make_token(server, "ka"), make_token(server, "kb")
    with client(server, ta) as ca, client(server, tb) as cb:
        a = ca.submit(["true"], idempotency_key="shared")
        b = cb.submit(["true"], idempotency_key="shared")
        assert a.id != b.id         # B's key never hands B A's run
