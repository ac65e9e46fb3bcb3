"""The allowlist proxy in-process: its parsers under fuzz, and what a client can make it pay.

Issue 11's amplification rule for the proxy: the sandbox must not make the
monitor hold more than MAX_CONNECTIONS connections (threads), read more than
MAX_HEAD bytes of a head, or wait on a silent client past HEAD_TIMEOUT.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from sandbox.netproxy import relay, server as srv
from sandbox.netproxy import wire
from sandbox.netproxy.rules import Allowlist, parse_rule


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parsers_take_any_bytes(data):
    from sandbox.netproxy import dnsstub
    for f in (wire.parse_http_head, wire.parse_socks_request, wire.client_hello_sni,
              dnsstub.parse_query):
        try:
            f(data)
        except (wire.WireError, dnsstub.DnsError):
            pass


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.sampled_from([b"GET", b"POST", b"CONNECT"]),
       st.text(alphabet="abc.:[]/1@%-", max_size=40),
       st.lists(st.text(alphabet="abcXY-: ", max_size=20), max_size=4))
def test_http_heads_parse_or_refuse(method, target, headers):
    head = b" ".join((method, target.encode(), b"HTTP/1.1")) + b"\r\n" + \
        b"".join(h.encode() + b"\r\n" for h in headers) + b"\r\n"
    try:
        req = wire.parse_http_head(head)
    except wire.WireError:
        return
    assert 1 <= req.port <= 65535 and req.host
    if not req.tunnel:
        assert req.head.endswith(b"Connection: close\r\n\r\n")
        assert b"proxy-connection" not in req.head.lower()


@pytest.fixture
def proxy(monkeypatch):
    monkeypatch.setattr(srv, "MAX_CONNECTIONS", 8)
    monkeypatch.setattr(srv, "HEAD_TIMEOUT", 1.0)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    records: list[srv.ConnRecord] = []
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(8)
    allow = Allowlist((parse_rule(f"127.0.0.1:{upstream.getsockname()[1]}"),))
    p = srv.ProxyServer(lst, allow, records.append).start()
    yield p, lst.getsockname()[1], upstream, records
    p.stop()
    upstream.close()


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "netproxy-conn")


def test_connections_beyond_the_bound_are_closed_and_recorded(proxy):
    p, port, _, records = proxy
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
    time.sleep(0.3)
    assert _threads() <= 8
    closed = 0
    for s in idle:
        s.settimeout(0.5)
        try:
            if s.recv(1) == b"":
                closed += 1
        except socket.timeout:
            pass
    assert closed >= 12          # the ones past the bound, closed at once
    assert sum(1 for r in records if "connection limit" in r.rule) >= 12
    for s in idle:
        s.close()
    deadline = time.monotonic() + 30     # every thread ends (closed or HEAD_TIMEOUT)
    while _threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads() == 0


def test_an_endless_head_is_cut_at_its_bound(proxy):
    p, port, _, records = proxy
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET http://x/ HTTP/1.1\r\n")
    sent = 0
    try:
        while sent < 10 * wire.MAX_HEAD:
            s.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
            sent += 1012
    except OSError:
        pass
    s.settimeout(5)
    reply = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                break
            reply += b
    except OSError:
        pass
    assert reply.startswith(b"HTTP/1.1 400") or reply == b""
    deadline = time.monotonic() + 30      # recorded once the server side has closed
    while not records and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("over" in r.rule for r in records), [r.rule for r in records]


def test_a_pinned_connection_goes_to_the_checked_address(proxy):
    p, port, upstream, records = proxy
    up_port = upstream.getsockname()[1]
    p.allowlist = Allowlist((parse_rule(f"pinned.example:{up_port}"),
                             parse_rule(f"127.0.0.1:{up_port}")))
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])     # a second lookup would differ
    p.resolve = lambda name, port_: next(answers)
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(f"CONNECT pinned.example:{up_port} HTTP/1.1\r\n\r\n".encode())
    assert c.recv(100).startswith(b"HTTP/1.1 200")
    conn, _ = upstream.accept()
    c.sendall(b"ping\n")       # a line (an unended word could still become a request)
    assert conn.recv(5) == b"ping\n"
    conn.close()
    c.close()
    deadline = time.monotonic() + 30
    while not records and time.monotonic() < deadline:
        time.sleep(0.05)
    rec = [r for r in records if r.host == "pinned.example"][0]
    assert rec.address == "127.0.0.1" and rec.resolved == ["127.0.0.1"] and rec.up == 5


@pytest.mark.parametrize("splice", [True, False])
def test_a_slow_reader_gets_every_byte(proxy, monkeypatch, splice):
    """Backpressure: the client stops reading while the upstream sends; the relay must
    wait for it (the sockets are non-blocking underneath), not drop the connection;
    through splice, or through the fallback's buffer where pipes are refused."""
    if not splice:
        def no_pipe() -> tuple[int, int]:
            raise OSError("refused")
        monkeypatch.setattr(relay, "_pipe", no_pipe)
    p, port, upstream, records = proxy
    up_port = upstream.getsockname()[1]
    size = 8 * 1024 * 1024
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\n\r\n".encode())
    assert c.recv(100).startswith(b"HTTP/1.1 200")
    conn, _ = upstream.accept()

    def send():
        conn.sendall(b"x" * size)
        conn.close()
    threading.Thread(target=send, daemon=True).start()
    got = len(c.recv(1024))
    time.sleep(1.5)                 # every buffer on the way fills up; the relay must wait
    c.settimeout(30)
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        got += len(b)
        time.sleep(0.01)
    c.close()
    assert got == size


def test_a_client_that_reads_nothing_makes_the_proxy_hold_little(proxy):
    """Found by probing (2026-12-07): a sandbox that opened 60 tunnels to a server
    sending without end, and read nothing, made the monitor's upstream sockets hold
    167 MiB of kernel receive buffers after 10 s (the kernel's autotuning grows each
    to tcp_rmem's maximum, 32 MiB here), none of it the sandbox's memory. Judged at
    the upstream: what it could send into the proxy's connections, its own send
    buffer fixed small, while the clients read nothing."""
    p, port, upstream, _ = proxy
    up_port = upstream.getsockname()[1]
    sent = [0] * 4
    clients = []

    def push(i: int, conn: socket.socket) -> None:
        chunk = b"x" * 65536
        try:
            while True:
                sent[i] += conn.send(chunk)
        except OSError:
            pass
    for i in range(len(sent)):
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", port))
        c.sendall(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\n\r\n".encode())
        clients.append(c)
        conn, _ = upstream.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        threading.Thread(target=push, args=(i, conn), daemon=True).start()
    last, deadline = -1, time.monotonic() + 20
    while sum(sent) != last and time.monotonic() < deadline:   # until nothing more moves
        last = sum(sent)
        time.sleep(1.0)
    for c in clients:
        c.close()
    per_connection = max(sent)
    assert per_connection <= 4 * 1024 * 1024, sent


@pytest.mark.parametrize("greeting", [b"\x05\xff", b"\x05\x01\x00\x05\x01\x00\x03\xff"])
def test_a_socks_greeting_a_byte_at_a_time_is_cut_at_the_head_bound(proxy, greeting):
    """Found by probing (2026-12-07): HEAD_TIMEOUT bounded each SOCKS5 read, not the
    whole greeting and request, so a client sending a byte every few seconds held a
    slot (a thread, a descriptor) for up to 555 reads. Judged by how many bytes the
    proxy took before it closed (HEAD_TIMEOUT is 1 s here, a byte goes every 0.25 s)."""
    _, port, _, _ = proxy
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(greeting)
    sent = 0
    try:
        for _ in range(60):
            time.sleep(0.25)
            c.sendall(b"a")
            sent += 1
    except OSError:
        pass
    c.close()
    assert sent < 30, sent


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(x.split()[1]) * 1024 for x in f if x.startswith("VmRSS:"))


def test_an_idle_tunnel_costs_the_monitor_little_memory(proxy):
    """Found by probing (2026-12-07): each tunnel held a 256 KiB buffer, zero-filled (so
    resident) though the kernel moved its bytes (splice) and the buffer was never used:
    64 idle tunnels of one run grew the monitor by 17 MiB. Judged by the process's RSS
    with 8 idle tunnels open (the fixture's bound), generously."""
    _, port, upstream, _ = proxy
    up_port = upstream.getsockname()[1]
    clients, ends = [], []
    before = _rss()
    for _ in range(8):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\n\r\n".encode())
        assert c.recv(100).startswith(b"HTTP/1.1 200")
        ends.append(upstream.accept()[0])
        ends[-1].sendall(b"banner\n")       # the server speaks first: the relay runs
        clients.append(c)
    for c in clients:
        assert c.recv(100) == b"banner\n"
    grown = _rss() - before
    for s in clients + ends:
        s.close()
    assert grown < 8 * 128 * 1024, grown
