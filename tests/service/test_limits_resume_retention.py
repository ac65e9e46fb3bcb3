"""Issue 16 item 8: Last-Event-ID resume, 413 on oversized bodies (announced or
streamed), and retention deleting what it should and nothing else."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from service.helpers import client

from sandbox.client import errors
from sandbox.client.sse import parse



def _ids(wire_lines: list[str]) -> list[int]:
    return [int(e.id) for e in parse(wire_lines) if e.id]


def test_last_event_id_resumes_after_that_event(server):
    with client(server) as c:
        run = c.run(["sh", "-c", "echo a; echo b >&2; echo c"])
        every = list(c.events(run.id))
    ids = [int(e.id) for e in every]
    assert len(ids) >= 4 and ids == sorted(ids)
    for k in (ids[0], ids[len(ids) // 2], ids[-2]):
        for how in ({"headers": {**server.auth(), "Last-Event-ID": str(k)}},
                    {"headers": server.auth(), "params": {"after": k}}):
            with httpx.stream("GET", f"{server.url}/v1/runs/{run.id}/events", timeout=60,
                              **how) as r:
                assert r.status_code == 200
                got = _ids(list(r.iter_lines()))
            assert got == [i for i in ids if i > k], (k, how)
    with client(server) as c:           # the client resumes the same way
        tail = list(c.events(run.id, last_event_id=str(ids[1])))
    assert [e.id for e in tail] == [e.id for e in every[2:]]
    assert [e.data for e in tail] == [e.data for e in every[2:]]


def test_oversized_bodies_are_413_and_store_nothing(start_server):
    srv = start_server("--max-body", "65536")
    with client(srv) as c:
        with pytest.raises(errors.PayloadTooLarge):
            c.submit(["true"], files={"big": b"x" * 100_000})
        with pytest.raises(errors.PayloadTooLarge):
            c.submit(["true"], stdin="y" * 100_000)
        assert c.list().items == []
        assert c.run(["true"], files={"small": b"x" * 1000}).status == "ok"  # under: fine


def test_a_streamed_oversized_body_is_413(start_server):
    srv = start_server("--max-body", "65536")

    def chunks():                   # no Content-Length: the server must count
        yield b'{"argv": ["true"], "stdin": "'
        for _ in range(20):
            yield b"z" * 8192
        yield b'"}'
    r = httpx.post(f"{srv.url}/v1/runs", content=chunks(),
                   headers={**srv.auth(), "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text
    with client(srv) as c:
        assert c.list().items == []


def test_retention_deletes_what_it_should_and_nothing_else(start_server, tmp_path):
    srv = start_server("--retain", "1h")        # the server's own sweep stays out of it
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("host file")
    with client(srv) as c:
        old = c.run(["sh", "-c", f'printf old > "$SANDBOX_OUTPUT/o"; '
                     f'ln -s {victim} "$SANDBOX_OUTPUT/link"; '
                     f'ln -s {victim}/keep.txt "$SANDBOX_OUTPUT/filelink"'])
        live = c.submit(["sleep", "60"])          # old too, but not finished
        time.sleep(4)
        new = c.run(["sh", "-c", 'printf new > "$SANDBOX_OUTPUT/n"'])
    old_dir = os.path.join(srv.state, "runs", old.id)
    assert os.path.isdir(old_dir)
    p = subprocess.run([sys.executable, "-m", "sandbox", "gc", "--service-state", srv.state,
                        "--older-than", "3s"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "SANDBOX_HOME": srv.home})
    assert p.returncode == 0, p.stderr
    with client(srv) as c:
        with pytest.raises(errors.NotFound):
            c.get(old.id)
        assert not os.path.exists(old_dir)
        assert c.get(new.id).status == "ok"
        assert c.download(new.id, "n") == b"new"
        assert c.get(live.id).status in ("queued", "running")
        c.cancel(live.id)
    assert (victim / "keep.txt").read_text() == "host file"   # links were not followed
    assert os.path.exists(os.path.join(srv.state, "admin.token"))
