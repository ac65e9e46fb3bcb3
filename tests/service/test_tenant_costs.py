"""What one tenant's requests may make the server hold or compute, judged from the
server's side (its open descriptors, its CPU time, its answers).

Found by an attack probe (2026-12-07):

- a tenant opened 500 event streams (`GET /v1/events`) and every one was served:
  each holds a descriptor, a task and a subscription on the event bus for as long as
  the client likes, and the server has one descriptor table (20,000 here) for every
  tenant, its store and its sandboxes;
- an inline policy of 50,000 rules (a 2.5 MB body, far under the 64 MiB limit) made
  `POST /v1/policies/check` cost 31 s of the server's CPU, `explain` 27 s, and
  `POST /v1/runs` the same (reading a policy is quadratic in its rules), while the
  whole server waited on the interpreter.
"""
from __future__ import annotations

import os
import socket
import time

from service.helpers import make_token

from sandbox.service.models import MAX_INLINE_ITEMS
from sandbox.service.streamslots import MAX_STREAMS

TRIES = MAX_STREAMS + 40


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _open(server, token: str, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
              "Accept: text/event-stream\r\n\r\n".encode())
    return s


def _status(s: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        got = s.recv(256)
        if not got:
            return 0
        head += got
    return int(head.split(b" ", 2)[1])


def test_one_token_holds_a_bounded_number_of_open_streams(server):
    alice = make_token(server, "alice")
    bob = make_token(server, "bob")
    assert server.proc is not None
    pid = server.proc.pid
    with server.client(alice) as c:
        r = c.post("/v1/runs", json={"argv": ["sleep", "120"]})
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
    base = _fds(pid)
    socks = [_open(server, alice, "/v1/events") for _ in range(TRIES)]
    try:
        statuses = [_status(s) for s in socks]
        held = [s for s, st in zip(socks, statuses) if st == 200]
        assert len(held) == MAX_STREAMS, statuses
        assert statuses.count(429) == TRIES - MAX_STREAMS, statuses
        for s, st in zip(socks, statuses):
            if st != 200:
                s.close()
        # a run's event stream and a long poll take the same slots
        with server.client(alice) as c:
            assert c.get(f"/v1/runs/{rid}/events").status_code == 429
            assert c.get(f"/v1/runs/{rid}", params={"wait": 30}).status_code == 429
            r = c.post("/v1/runs", params={"wait": 30}, json={"argv": ["true"]})
            assert r.status_code == 429, r.text
            assert "stream" in r.json()["detail"]
            # a plain request still works, and made no run above
            assert len(c.get("/v1/runs").json()["items"]) == 1
        # what the server holds for alice is her slots, not what she asked for
        assert _fds(pid) - base <= MAX_STREAMS + 16, (_fds(pid), base)
        # another tenant is not refused
        other = _open(server, bob, "/v1/events")
        assert _status(other) == 200
        other.close()
        # a closed stream gives its slot back
        held[0].close()
        deadline = time.monotonic() + 60
        while True:
            again = _open(server, alice, f"/v1/runs/{rid}/events")
            st = _status(again)
            again.close()
            if st == 200:
                break
            assert st == 429 and time.monotonic() < deadline, st
            time.sleep(0.2)
    finally:
        for s in socks:
            s.close()
    # streams whose clients leave at once (before the first byte, or right after
    # it) give their slots back: afterwards alice holds her full count again
    for i in range(3 * MAX_STREAMS):
        s = _open(server, alice, "/v1/events" if i % 2 else f"/v1/runs/{rid}/events")
        if i % 3:
            _status(s)
        s.close()
    deadline = time.monotonic() + 60
    while True:
        socks = [_open(server, alice, "/v1/events") for _ in range(MAX_STREAMS)]
        statuses = [_status(s) for s in socks]
        for s in socks:
            s.close()
        if statuses == [200] * MAX_STREAMS:
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
    with server.client(alice) as c:
        c.post(f"/v1/runs/{rid}/cancel")


def _big_policy(rules: int) -> dict:
    return {"name": "big", "filesystem": {"read": [f"/usr/share/d{i}/*/x*y"
                                                   for i in range(rules)]}}


def test_an_inline_policy_is_bounded_before_it_is_read(server):
    alice = make_token(server, "alice")
    assert server.proc is not None
    pid = server.proc.pid
    big = _big_policy(20000)
    asks = [("/v1/policies/check", {"policy_inline": big}),
            ("/v1/policies/explain", {"policy_inline": big, "path": "/usr/share/d5/q/xay"}),
            ("/v1/runs", {"argv": ["true"], "policy_inline": big})]
    with server.client(alice) as c:
        before = _cpu_seconds(pid)
        for path, body in asks:
            r = c.post(path, json=body, timeout=600)
            assert r.status_code == 422, (path, r.status_code, r.text[:300])
            detail = str(r.json()["detail"])
            assert "policy_inline" in detail and str(MAX_INLINE_ITEMS) in detail, detail
        spent = _cpu_seconds(pid) - before
        # reading these three bodies is milliseconds; reading their policies was ~12 s
        assert spent < 3.0, spent
        assert c.get("/v1/runs").json()["items"] == []
        # the bound leaves room for a real policy
        fits = _big_policy(MAX_INLINE_ITEMS - 16)
        r = c.post("/v1/policies/check", json={"policy_inline": fits}, timeout=600)
        assert r.status_code == 200 and r.json()["ok"], r.text[:300]


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _slow_reader(server, token: str, path: str) -> socket.socket:
    """A client that asks and never reads past the status line: a 4 KiB receive
    buffer, so the server's send blocks once the kernel's buffers are full."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", server.port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n"
              .encode())
    return s


def _answered(s: socket.socket, wait: float) -> bool:
    import select
    return bool(select.select([s], [], [], wait)[0])


def test_readers_that_never_read_a_large_result_are_bounded(server):
    """Found by the probe: a run that printed its 16 MiB of stdout and of stderr, and
    20 requests for it whose client never read the answer, took the server from 474
    MiB to 1.36 GB (44 MiB held for each, for as long as the client liked). A token
    now has at most MAX_LARGE answers over LARGE_BODY bytes in flight; the next
    waits for one of them to be read, holding nothing but its connection."""
    from sandbox.service.streamslots import MAX_LARGE
    alice = make_token(server, "alice")
    bob = make_token(server, "bob")
    assert server.proc is not None
    pid = server.proc.pid
    with server.client(alice) as c:
        r = c.post("/v1/runs", params={"wait": 120}, json={"argv": ["sh", "-c",
                   "head -c 12000000 /dev/urandom | base64 -w 200; "
                   "head -c 12000000 /dev/urandom | base64 -w 200 >&2; "
                   "echo x > $SANDBOX_OUTPUT/f"]}, timeout=180)
        run = r.json()
        assert run["status"] == "ok", run
        assert len(run["result"]["stdout"]) + len(run["result"]["stderr"]) > 30 << 20
    path = f"/v1/runs/{run['id']}"
    # MAX_LARGE readers are answered (and their answers held while unread) ...
    socks = [_slow_reader(server, alice, path) for _ in range(MAX_LARGE)]
    try:
        assert all(_answered(s, 60) and _status(s) == 200 for s in socks)
        time.sleep(2)
        held = _rss_kib(pid)
        # ... and 16 more hold nothing but their connections until one is read
        socks += [_slow_reader(server, alice, path) for _ in range(16)]
        time.sleep(5)
        answered = [s for s in socks if _answered(s, 0.1)]
        assert answered == socks[:MAX_LARGE], len(answered)
        grown = _rss_kib(pid) - held
        # held for each of them, they were 16 x 44 MiB more
        assert grown < 64 * 1024, grown
        # small answers are not held back, nor is another tenant's large one
        with server.client(alice) as c:
            assert c.get("/v1/runs").status_code == 200
            assert c.get(f"{path}/files").status_code == 200
        with server.client() as admin:
            assert admin.get(path).status_code == 200
        # a reader that goes away lets a waiting one be answered
        for s in answered:
            s.close()
        waiting = [s for s in socks if s not in answered]
        deadline = time.monotonic() + 60
        while not any(_answered(s, 0) for s in waiting):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        for s in socks:
            s.close()
    # every slot comes back once the readers are gone (the requests that waited are
    # answered first, to nobody)
    with server.client(alice) as c:
        assert [c.get(path, timeout=120).status_code for _ in range(MAX_LARGE + 1)] == \
            [200] * (MAX_LARGE + 1)
    # downloads hold a descriptor each: they take the stream slots, and a client that
    # leaves at once leaves neither a slot nor a descriptor behind
    before = _fds(pid)
    for _ in range(3 * MAX_STREAMS):
        s = _slow_reader(server, alice, f"{path}/files/f")
        s.close()
    time.sleep(2)
    assert _fds(pid) - before < 8, (before, _fds(pid))
    with server.client(bob) as c:
        assert c.get("/v1/runs").status_code == 200


def _peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_one_tokens_large_submissions_are_read_a_few_at_a_time(server):
    """A 60 MiB submission costs the server about 190 MiB while it is read and
    decoded (the JSON text, its objects, the files' bytes); eight at once from one
    tenant took it to 1.34 GB, and nothing bounded how many (probe 2026-12-07). A
    token's submissions are read at most MAX_LARGE at once; the rest wait unread."""
    import base64
    import json
    import threading

    from sandbox.service.streamslots import MAX_LARGE
    alice = make_token(server, "alice")
    assert server.proc is not None
    pid = server.proc.pid
    body = {"argv": ["true"], "files": [
        {"name": f"f{i}", "content_b64": base64.b64encode(os.urandom(6 << 20)).decode()}
        for i in range(3)]}
    size = len(json.dumps(body)) >> 10         # KiB
    with server.client(alice) as c:
        assert c.post("/v1/runs", json=body, timeout=300).status_code == 202
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    base = _peak_kib(pid)
    statuses: list[int] = []

    def submit() -> None:
        with server.client(alice) as c:
            statuses.append(c.post("/v1/runs", json=body, timeout=300).status_code)
    many = 3 * MAX_LARGE
    threads = [threading.Thread(target=submit) for _ in range(many)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [202] * many, statuses
    grown = _peak_kib(pid) - base
    # each costs about three times its body while it is read; read all at once,
    # `many` of them; MAX_LARGE at a time, MAX_LARGE of them
    assert grown < many // 2 * 3 * size, (grown, size)
