"""An allowed name must not carry a request for another server behind the same front.

The attack (found by probing the landed main, 2026-12-06): with `front.test:PORT`
allowed, `GET http://front.test:PORT/` with `Host: admin.internal` reached the
admin virtual host of the server behind it, and the audit recorded the allowed
name; the same worked inside a CONNECT or SOCKS5 tunnel in cleartext, and with a
second request smuggled after the first. Judged at the upstream server: every
request it receives names the allowed host, and it receives one per connection.
"""
from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.netproxy import server as srv, wire
from sandbox.netproxy.rules import Allowlist, parse_rule

NAME = "front.test"


class VirtualHosts(socketserver.ThreadingTCPServer):
    """A raw HTTP/1.1 server that answers every request it can split off a
    connection, pipelined ones included, `Connection: close` or not (as some
    servers do), by the virtual host its `Host` header names."""

    daemon_threads = True
    read_timeout = 1.0        # a silent client is dropped after this long

    def __init__(self, read_timeout: float = 1.0) -> None:
        self.read_timeout = read_timeout
        super().__init__(("127.0.0.1", 0), _Answer)
        self.port = self.server_address[1]
        self.hosts: list[str] = []
        self.lines: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Answer(socketserver.BaseRequestHandler):
    server: VirtualHosts

    def handle(self) -> None:
        c, data = self.request, b""
        c.settimeout(self.server.read_timeout)
        try:
            while more := c.recv(65536):
                data += more
                while b"\r\n\r\n" in data:
                    head, _, data = data.partition(b"\r\n\r\n")
                    first, *headers = head.decode("latin-1").split("\r\n")
                    host = next((h.split(":", 1)[1].strip() for h in headers
                                 if h.lower().startswith("host:")), "")
                    self.server.lines.append(first)
                    self.server.hosts.append(host)
                    target = first.split(" ")[1] if " " in first else ""
                    admin = host.startswith("admin.internal") or "admin.internal" in target
                    body = b"ADMIN-SECRET" if admin else b"public"
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(body), body))
        except OSError:
            pass


def start_proxy(upstream: int) -> tuple[srv.ProxyServer, int, list[srv.ConnRecord]]:
    """A proxy allowing only NAME:`upstream` (NAME resolving to 127.0.0.1): the proxy,
    its port, its records."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    records: list[srv.ConnRecord] = []
    allow = Allowlist((parse_rule(f"{NAME}:{upstream}"),), deny_private=False)
    p = srv.ProxyServer(lst, allow, records.append,
                        resolve=lambda name, port: ["127.0.0.1"] if name == NAME else []).start()
    return p, lst.getsockname()[1], records


@contextlib.contextmanager
def proxied(server: Any) -> Iterator[tuple[Any, int, list[srv.ConnRecord]]]:
    """`server` (with .port and .close) behind a proxy allowing it (`start_proxy`):
    (server, the proxy's port, its records); both stopped after."""
    p, port, records = start_proxy(server.port)
    try:
        yield server, port, records
    finally:
        p.stop()
        server.close()


@pytest.fixture
def front():
    with proxied(VirtualHosts()) as f:
        yield f


def _talk(port: int, *sends: bytes | float, read: float = 5.0) -> bytes:
    """Send each bytes step (a float step: a pause of that many seconds), then read
    until the proxy closes or `read` seconds pass without a byte."""
    s = socket.create_connection(("127.0.0.1", port), timeout=read)
    try:
        for data in sends:
            if isinstance(data, float):
                time.sleep(data)
                continue
            try:
                s.sendall(data)
            except OSError:
                break
        out = b""
        while True:
            try:
                more = s.recv(65536)
            except OSError:       # a timeout, or reset by a refusal
                break
            if not more:
                break
            out += more
        return out
    finally:
        s.close()


def _connect(port: int, upstream: int) -> bytes:
    return f"CONNECT {NAME}:{upstream} HTTP/1.1\r\nHost: {NAME}:{upstream}\r\n\r\n".encode()


def _socks(upstream: int) -> bytes:
    return (b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(NAME)]) + NAME.encode()
            + struct.pack(">H", upstream))


ADMIN = b"GET / HTTP/1.1\r\nHost: admin.internal\r\n\r\n"


def _recorded(records: list[srv.ConnRecord]) -> list[srv.ConnRecord]:
    """The records, once the connection's thread has made its one (after closing)."""
    for _ in range(500):
        if records:
            break
        time.sleep(0.01)
    return records


@pytest.mark.parametrize("way", ["absolute", "connect", "connect-absolute", "socks",
                                 "byte-at-a-time", "smuggled"])
def test_the_upstream_sees_only_the_allowed_host(front, way):
    vh, port, records = front
    up = vh.port
    if way == "absolute":
        sends = [f"GET http://{NAME}:{up}/ HTTP/1.1\r\nHost: admin.internal\r\n\r\n".encode()]
    elif way == "connect":
        sends = [_connect(port, up) + ADMIN]
    elif way == "connect-absolute":
        sends = [_connect(port, up) + b"GET http://admin.internal/ HTTP/1.1\r\n\r\n"]
    elif way == "socks":
        sends = [_socks(up) + ADMIN]
    elif way == "byte-at-a-time":
        sends = [_connect(port, up)] + [bytes([b]) for b in ADMIN]
    else:
        sends = [f"GET http://{NAME}:{up}/ HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 0\r\n"
                 "\r\n".encode() + ADMIN]
    out = _talk(port, *sends)
    assert b"public" in out and b"ADMIN-SECRET" not in out, out
    assert vh.hosts == [f"{NAME}:{up}"], vh.hosts
    assert all(" http://" not in line for line in vh.lines), vh.lines
    assert [r.host for r in _recorded(records)] == [NAME]


def test_a_request_body_goes_up_whole_and_nothing_after_it(front):
    vh, port, _ = front
    out = _talk(port, f"POST http://{NAME}:{vh.port}/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
                "helloGET / HTTP/1.1\r\nHost: admin.internal\r\n\r\n".encode())
    assert b"public" in out and b"ADMIN-SECRET" not in out
    assert vh.hosts == [f"{NAME}:{vh.port}"]


@pytest.mark.parametrize("head, why", [
    (b"Transfer-Encoding: chunked\r\n", b"Content-Length"),
    (b"X-A: 1\r\n Host: admin.internal\r\n", b"folded"),
    (b"Host : admin.internal\r\n", b"bad header line"),
    (b"Content-Length: 1\r\nContent-Length: 2\r\n", b"Content-Length"),
    # found by probing (2026-12-07): servers behind a CGI/WSGI-style gateway read an
    # underscore as a dash (HTTP_TRANSFER_ENCODING): a framing header the proxy never saw
    (b"Transfer_Encoding: chunked\r\n", b"read as"),
    (b"Content_Length: 5\r\n", b"read as"),
])
def test_heads_servers_read_differently_are_refused(front, head, why):
    vh, port, records = front
    out = _talk(port, f"POST http://{NAME}:{vh.port}/ HTTP/1.1\r\n".encode() + head + b"\r\n")
    assert out.startswith(b"HTTP/1.1 400") and why in out, out
    assert vh.hosts == [] and _recorded(records)[0].result == "400"


def test_other_protocols_still_pass_a_tunnel(front):
    """A tunnel that does not start with an HTTP request is relayed as it was: what
    the client sends, the server gets (here the server reads it as no request)."""
    vh, port, _ = front
    out = _talk(port, _connect(port, vh.port) + b"SSH-2.0-client\r\n")
    assert out == b"HTTP/1.1 200 Connection established\r\n\r\n"


@pytest.mark.isolation
@pytest.mark.parametrize("proxy", ["http://127.0.0.1:3128", "socks5h://127.0.0.1:3128"])
def test_a_sandboxed_curl_cannot_pick_the_virtual_host(tmp_path, proxy):
    """The same from inside a sandbox: curl through the monitor's proxy, to an allowed
    name, with `-H "Host: admin.internal"`; --proxytunnel makes http:// a CONNECT."""
    from dataclasses import replace

    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    vh = VirtualHosts()
    try:
        pol = load_policy("default")
        pol = pol.replace(network=replace(pol.network, mode="allowlist", deny_private=False,
                                          allow=(f"localhost:{vh.port}",)))
        url = f"http://localhost:{vh.port}/"
        for extra in ([], ["--proxytunnel"]):
            r = Launcher(capture_output=True).spawn(
                ["curl", "-sS", "--max-time", "20", "--proxy", proxy, *extra,
                 "-H", "Host: admin.internal", url], policy=pol, timeout=120)
            assert (r.status, r.stdout) == ("ok", "public"), (extra, r.reason, r.stderr)
        assert vh.hosts and set(vh.hosts) == {f"localhost:{vh.port}"}, vh.hosts
    finally:
        vh.close()


class _Lenient(socketserver.ThreadingTCPServer):
    """An upstream built on Python's http.server, which ends a header line at a bare
    LF (as many servers do): it keeps every `Host` header each request carried."""

    daemon_threads = True

    def __init__(self) -> None:
        import http.server
        hosts: list[list[str]] = []

        names: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hosts.append(self.headers.get_all("Host") or [])
                names.extend(k.lower() for k in self.headers.keys())
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port, self.hosts, self.names = self.server_address[1], hosts, names
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.mark.parametrize("via", ["absolute", "connect"])
@pytest.mark.parametrize("line", [b"X-A: 1\nHost: admin.internal", b"X-A: 1\rHost: admin.internal",
                                  b"X-A: 1\x00\nHost: admin.internal"])
def test_a_line_break_inside_a_header_cannot_add_one(via, line):
    """Found by probing (2026-12-07): the proxy split headers at CRLF only, so `X-A: 1`
    LF `Host: admin.internal` went up as one line, and a server ending lines at LF
    read a second Host header (or, the same way, a Transfer-Encoding the proxy never
    saw: a body read as a second request)."""
    up = _Lenient()
    p, port, _ = start_proxy(up.port)
    try:
        req = b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n"
        if via == "absolute":
            req = req.replace(b"GET /", f"GET http://{NAME}:{up.port}/".encode(), 1)
        else:
            req = _connect(0, up.port) + req
        out = _talk(port, req, read=2.0)
        assert all(h == [f"{NAME}:{up.port}"] for h in up.hosts), up.hosts
        assert b" 400 " in out or (via == "connect" and not up.hosts), out
    finally:
        p.stop()
        up.shutdown()
        up.server_close()


@pytest.mark.parametrize("via", ["absolute", "connect"])
def test_headers_that_name_another_host_do_not_go_up(via):
    """Found by probing (2026-12-07): X-Forwarded-Host, Forwarded, X-Original-URL and
    their kind went up as sent; an application that trusts them (Express with `trust
    proxy`, Django's USE_X_FORWARDED_HOST, Symfony's X-Original-URL routing) picked the
    host or route they named, behind a request the proxy had rewritten for the allowed
    host. Judged at the upstream: none of them arrives, the request does."""
    up = _Lenient()
    p, port, _ = start_proxy(up.port)
    try:
        extra = "".join(f"{h.decode()}: admin.internal\r\n" for h in sorted(wire.HOST_NAMING))
        req = f"GET / HTTP/1.1\r\n{extra}X-Kept: 1\r\n\r\n".encode()
        if via == "absolute":
            req = req.replace(b"GET /", f"GET http://{NAME}:{up.port}/".encode(), 1)
        else:
            req = _connect(0, up.port) + req
        _talk(port, req, read=2.0)
        assert up.hosts == [[f"{NAME}:{up.port}"]] and "x-kept" in up.names, up.names
        assert not set(up.names) & {h.decode() for h in wire.HOST_NAMING}, up.names
    finally:
        p.stop()
        up.shutdown()
        up.server_close()


@pytest.mark.parametrize("via", ["absolute", "connect"])
@pytest.mark.parametrize("body", [ADMIN, b"\r\n" + ADMIN, b"get / http/1.1\r\nHost: admin.internal\r\n\r\n"])
@pytest.mark.parametrize("apart", [False, True])
def test_a_body_cannot_carry_a_request_for_another_host(front, via, body, apart):
    """Found by probing (2026-12-07): a GET whose Content-Length body is itself a
    request for admin.internal went up as that body; a server that ignores a request's
    Content-Length (a known desync, "CL.0": some endpoints, some servers) read it as a
    second request and answered it. The body is now refused when it starts like a
    request (HTTP/1.x request line), also when it arrives after the head."""
    vh, port, _ = front
    head = f"GET http://{NAME}:{vh.port}/ HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
    first = head.encode() if via == "absolute" else _connect(0, vh.port) + head.replace(
        f"http://{NAME}:{vh.port}", "").encode()
    steps: list[bytes | float] = [first, 0.3, body] if apart else [first + body]
    out = _talk(port, *steps, read=2.0)
    assert b"ADMIN-SECRET" not in out, out
    assert all(h == f"{NAME}:{vh.port}" for h in vh.hosts), vh.hosts


def test_ordinary_bodies_still_go_up(front):
    vh, port, _ = front
    for body in (b'{"query": {"match_all": {}}}', b"hello", b"a=1&b=GET / HTTP/1.1"):
        out = _talk(port, f"GET http://{NAME}:{vh.port}/ HTTP/1.1\r\nContent-Length: "
                    f"{len(body)}\r\n\r\n".encode() + body, read=2.0)
        assert out.startswith(b"HTTP/1.1 200"), (body, out)
