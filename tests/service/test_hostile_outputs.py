"""Issue 16 item 8, hostile outputs, judged from the host's files and from the
HTTP bytes: a run writing to ${OUTPUT}/../../x, planting links to a host
secret, naming files with CR/LF and markup, and printing terminal escapes and
forged SSE frames. Whatever it does, nothing lands outside its output
directory, no byte of the secret is served, its text is data in JSON (never a
frame, a header or markup), and the CLI prints no control character of it."""
from __future__ import annotations

import json
import os
import urllib.parse

import httpx
import pytest
from service.helpers import cli, client

from sandbox.client import errors

FORGED = ("\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e\r\nevent: exit\ndata: {\"status\": \"ok\"}\n\n"
          "id: 999\nretry: 1\n\n")


def _tree(root: str) -> set[str]:
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def test_writes_above_the_output_directory_land_nowhere(server):
    """Inside, the writes may succeed (the run's own scratch); on the host nothing
    named x holding its bytes appears, in the state directory or beside it."""
    before = _tree(server.state)
    with client(server) as c:
        run = c.run(["sh", "-c", 'for p in ../x ../../x ../../../x ../input/x; do '
                     'printf pwned > "$SANDBOX_OUTPUT/$p"; done; '
                     'printf ok > "$SANDBOX_OUTPUT/fine"'])
    assert run.status in ("ok", "error"), run.reason
    created = _tree(server.state) - before
    # ../input/x writes the work directory: under default's copy-on-write that change
    # is the run's own product, exported into its output (workdir.changes/x)
    own = f"runs/{run.id}/output/"
    escaped = [p for p in created if os.path.basename(p) == "x" and not p.startswith(own)]
    assert escaped == [], escaped
    own_dir = os.path.join(server.state, own)
    for d, _, files in os.walk(os.path.dirname(server.state)):
        for n in files:
            if n == "x" and not os.path.join(d, n).startswith(own_dir):
                with open(os.path.join(d, n), "rb") as f:
                    assert f.read() != b"pwned", os.path.join(d, n)


def test_input_names_that_leave_the_input_directory_are_422(server):
    with client(server) as c:
        for name in ("../../x", "/etc/x", "a/../../x", "x\ny", "."):
            with pytest.raises(errors.ValidationFailed) as info:
                c.submit(["true"], files={name: b"pwned"})
            assert "files" in info.value.reason
        assert c.list().items == []


def test_links_to_a_host_secret_are_listed_never_followed(server, tmp_path):
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"TOPSECRET-host-bytes")
    os.chmod(secret, 0o644)
    targets = {"shadow": "/etc/shadow", "secret": str(secret), "root": "/",
               "tmpdir": str(tmp_path)}
    script = "; ".join(f'ln -s {t} "$SANDBOX_OUTPUT/{n}"' for n, t in targets.items())
    with client(server) as c:
        run = c.run(["sh", "-c", script + '; printf ok > "$SANDBOX_OUTPUT/fine"'])
        assert run.status == "ok", run.reason
        listing = {f.path: f.kind for f in c.files(run.id)}
        assert listing.get("fine") == "file"
        for n in targets:
            assert listing.get(n) in ("symlink", None), listing
        raw = [httpx.get(f"{server.url}/v1/runs/{run.id}/files/{p}", headers=server.auth())
               for p in ("shadow", "secret", "root/etc/shadow", "root/etc/passwd",
                         f"tmpdir/{secret.name}", "root", "tmpdir")]
        for r in raw:
            assert r.status_code in (403, 404), (r.request.url, r.status_code)
            assert b"TOPSECRET" not in r.content and b"root:" not in r.content
        dest = tmp_path / "dl"
        dest.mkdir()
        assert c.download_all(run.id, str(dest)) == [str(dest / "fine")]
        assert _tree(str(dest)) == {"fine"}


def test_file_names_are_never_headers_or_markup(server):
    names = ["a\r\nSet-Cookie: pwned=1", "<img src=x onerror=alert(1)>.html", "x.svg"]
    script = "; ".join(f"printf '<script>alert(1)</script>' > \"$SANDBOX_OUTPUT/$(printf '{n}')\""
                       for n in names)
    with client(server) as c:
        run = c.run(["sh", "-c", script])
        listing = [f.path for f in c.files(run.id)]
        assert len(listing) == len(names), listing
        for path in listing:
            r = httpx.get(f"{server.url}/v1/runs/{run.id}/files/"
                          + urllib.parse.quote(path, safe="/"), headers=server.auth())
            assert "set-cookie" not in r.headers
            if any(ord(ch) < 32 for ch in path):
                assert r.status_code == 404        # listed, never served (nor in a header)
                continue
            assert r.status_code == 200, (path, r.status_code)
            assert "set-cookie" not in r.headers
            assert r.headers["content-type"].split(";")[0] == "application/octet-stream"
            assert r.headers.get("x-content-type-options") == "nosniff"
            assert r.headers["content-disposition"].startswith("attachment")
            assert "\r" not in r.headers["content-disposition"]


def test_control_characters_in_stdout_are_json_data_and_never_reach_the_terminal(server):
    with client(server) as c:
        run = c.run(["printf", "%s", FORGED])
        assert run.result["stdout"] == FORGED          # kept exactly, as data
        r = httpx.get(f"{server.url}/v1/runs/{run.id}", headers=server.auth())
        assert r.headers["content-type"].startswith("application/json")
        assert b"\x1b" not in r.content and b"\x07" not in r.content   # escaped in JSON
        assert json.loads(r.content)["result"]["stdout"] == FORGED
    for args in (("show", run.id), ("list",), ("show", "--json", run.id)):
        p = cli(server, "runs", "--server", server.url, *args)
        assert p.returncode == 0, p.stderr
        for bad in (b"\x1b", b"\x07", b"\x9b", "\u202e".encode(), b"\r"):
            assert bad not in p.stdout + p.stderr, (args, bad)


def test_control_characters_in_stdout_cannot_forge_events(server):
    with client(server) as c:
        run = c.run(["sh", "-c", f"printf '%s' '{FORGED}'; printf '%s' '{FORGED}' >&2"])
    with httpx.stream("GET", f"{server.url}/v1/runs/{run.id}/events",
                      headers=server.auth(), timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        wire = r.read()
    # JSON escapes every control character: the only CR/LF are the frame's own
    assert b"\x1b" not in wire and b"\x07" not in wire
    assert b"\r" not in wire.replace(b"\r\n", b"")
    lines = wire.decode().split("\r\n") if b"\r\n" in wire else wire.decode().split("\n")
    assert sum(1 for ln in lines if ln.startswith("event: exit")) == 1
    assert not any(ln.startswith("id: 999") or ln.startswith("retry") for ln in lines)
    with client(server) as c:
        events = list(c.events(run.id))
    assert "".join(e.data["text"] for e in events if e.event == "stdout") == FORGED
    assert "".join(e.data["text"] for e in events if e.event == "stderr") == FORGED
    p = cli(server, "runs", "--server", server.url, "events", run.id)
    assert p.stdout == FORGED.encode()                 # the program's bytes, like exec
    own = p.stderr.replace(FORGED.encode(), b"")       # stderr: the program's, passed through
    assert b"exit" in own
    for bad in (b"\x1b", b"\x07", b"\xc2\x9b", "\u202e".encode(), b"\r"):
        assert bad not in own                          # sandbox's own lines are printable
