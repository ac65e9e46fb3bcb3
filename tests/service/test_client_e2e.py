"""Issue 16 item 8, first bullet: against a real `sandbox serve`, submit a program
and a workflow, follow their events to the end, fetch the result and the
files, through the Python client (sync and async) and the CLI."""
from __future__ import annotations

import asyncio
import json

import pytest
from service.helpers import WORKFLOW, cli, client

from sandbox.client import errors
from sandbox.client.aio import AsyncClient

PROGRAM = ["sh", "-c", "echo hi; echo oops >&2; printf data > \"$SANDBOX_OUTPUT/out.txt\"; "
           "mkdir -p \"$SANDBOX_OUTPUT/sub\"; printf deep > \"$SANDBOX_OUTPUT/sub/f\""]


def test_program_result(server):
    with client(server) as c:
        run = c.run(PROGRAM)
        assert run.status == "ok", run.reason
        assert run.kind == "exec" and run.argv == PROGRAM
        assert run.result["stdout"] == "hi\n" and run.result["stderr"] == "oops\n"
        assert run.started_at and run.finished_at and run.finished_at >= run.started_at
        assert c.get(run.id).result == run.result


def test_program_events(server):
    with client(server) as c:
        run = c.run(PROGRAM)
        events = list(c.events(run.id))
        kinds = [e.event for e in events]
        assert kinds[0] == "queued" and kinds[-1] == "exit" and "started" in kinds
        assert [int(e.id) for e in events] == sorted({int(e.id) for e in events})
        out = "".join(e.data["text"] for e in events if e.event == "stdout")
        assert out == "hi\n"
        assert events[-1].data["status"] == "ok"


def test_program_files(server, tmp_path):
    with client(server) as c:
        run = c.run(PROGRAM)
        listing = {f.path: f for f in c.files(run.id)}
        assert listing["out.txt"].kind == "file" and listing["out.txt"].size == 4
        assert c.download(run.id, "out.txt") == b"data"
        written = c.download_all(run.id, str(tmp_path))
        assert sorted(written) == sorted([str(tmp_path / "out.txt"), str(tmp_path / "sub/f")])
        assert (tmp_path / "sub/f").read_bytes() == b"deep"


def test_workflow_result(server):
    with client(server) as c:
        run = c.run(workflow=WORKFLOW)
        assert run.status == "ok", run.reason
        assert run.kind == "workflow"
        assert run.result["store"]["total"] == 60
        assert run.result["messages"]["progress"] == 1


def test_workflow_events(server):
    with client(server) as c:
        run = c.run(workflow=WORKFLOW)
        events = list(c.events(run.id))
        kinds = [e.event for e in events]
        assert kinds[-1] == "exit" and "message" in kinds and "log" in kinds
        msg = next(e for e in events if e.event == "message" and e.data["type"] == "progress")
        assert msg.data["payload"] == {"done": 3, "of": 3}


def test_workflow_files(server):
    with client(server) as c:
        run = c.run(workflow=WORKFLOW)
        assert c.download(run.id, "report.txt") == b"total=60\n"


def test_async_client_runs_and_follows(server):
    async def go() -> tuple[str, list[str]]:
        async with AsyncClient(server.url, server.admin_token) as ac:
            run = await ac.run(["sh", "-c", "echo async"])
            kinds = [e.event async for e in ac.events(run.id)]
            return run.result["stdout"], kinds
    stdout, kinds = asyncio.run(go())
    assert stdout == "async\n" and kinds[-1] == "exit"


def test_get_list_cancel_and_typed_errors(server):
    with client(server) as c:
        slow = c.submit(["sleep", "60"])
        assert slow.status in ("queued", "running")
        assert slow.id in [r.id for r in c.list().items]
        cancelled = c.cancel(slow.id)
        assert c.wait(cancelled.id, deadline=120).status == "cancelled"
        with pytest.raises(errors.NotFound):
            c.get("run_doesnotexist")
        with pytest.raises(errors.ValidationFailed) as info:
            c.submit(["true"], timeout=-1)
        assert "timeout" in info.value.reason
    with client(server, "sbx_wrong") as c, pytest.raises(errors.Unauthorized):
        c.list()


def test_cli_submit_follow_mirrors_exec(server):
    p = cli(server, "submit", "--follow", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert p.returncode == 3, p.stderr
    assert p.stdout == b"out\n"
    assert p.stderr.endswith(b"err\n")
    p = cli(server, "submit", "--follow", "--", "sh", "-c", "kill -9 $$")
    assert p.returncode == 137, p.stderr


def test_cli_submit_then_runs_verbs(server):
    p = cli(server, "submit", "--wait", "60", "--", "sh", "-c",
            "echo x; printf y > \"$SANDBOX_OUTPUT/y.txt\"")
    assert p.returncode == 0, p.stderr
    run_id = p.stdout.decode().strip()
    assert run_id.startswith("run_")
    url = server.url
    show = cli(server, "runs", "--server", url, "show", "--json", run_id)
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["status"] == "ok"
    ls = cli(server, "runs", "--server", url, "list", "-q")
    assert run_id in ls.stdout.decode().split()
    logs = cli(server, "runs", "logs", "--server", url, run_id)
    assert b"--- stdout ---\nx\n" in logs.stdout


def test_cli_download_and_events(server, tmp_path):
    p = cli(server, "submit", "--wait", "60", "--", "sh", "-c",
            "echo x; printf y > \"$SANDBOX_OUTPUT/y.txt\"")
    run_id = p.stdout.decode().strip()
    url = server.url
    dl = cli(server, "runs", "--server", url, "download", run_id, "-o", str(tmp_path))
    assert dl.returncode == 0, dl.stderr
    assert (tmp_path / "y.txt").read_bytes() == b"y"
    ev = cli(server, "runs", "--server", url, "events", "--json", run_id)
    assert json.loads(ev.stdout.decode().splitlines()[-1])["event"] == "exit"


def test_cli_workflow_submit(server, tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(WORKFLOW))
    p = cli(server, "submit", "--workflow", str(wf), "--wait", "60", "--json")
    assert p.returncode == 0, p.stderr
    view = json.loads(p.stdout)
    assert view["status"] == "ok" and view["result"]["store"]["total"] == 60


def test_cli_bad_input_and_refusals_are_one_line(server):
    for args, code in [(("submit",), 125), (("submit", "--timeout", "-1", "--", "true"), 125),
                       (("submit", "--workflow", "/nonexistent.json"), 125),
                       (("runs", "--server", server.url, "show", "run_nope"), 2),
                       (("runs", "cancel", "x"), 2)]:
        p = cli(server, *args)
        assert p.returncode == code, (args, p.stderr)
        assert len(p.stderr.decode().strip().splitlines()) == 1, (args, p.stderr)
        assert b"Traceback" not in p.stderr
    p = cli(server, "submit", "--", "true", token="sbx_wrong")
    assert p.returncode == 125 and b"401" in p.stderr


def test_audit_through_the_client_and_the_cli(server):
    with client(server) as c:
        run = c.run(["sh", "-c", "cat /etc/shadow; true"], policy="strict")
        denied = c.audit(run.id, denied=True)
        assert any(r.get("path") == "/etc/shadow" for r in denied["items"])
        assert all(r.get("verdict", "denied") == "denied" or r.get("denied")
                   for r in denied["items"])
    p = cli(server, "runs", "--server", server.url, "audit", "--denied", run.id)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    assert any(ln.split() == ["denied", "read", "/etc/shadow"] for ln in lines), lines
