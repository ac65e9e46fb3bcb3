"""What a tunnel to an allowed name carries first decides what it may carry at all.

A CONNECT (or SOCKS5) tunnel to a name is checked on the client's first bytes: a
TLS ClientHello must name the tunnel's host, a cleartext HTTP request is rewritten
to name it (`test_netproxy_fronting.py`). The attacks here (found by probing,
2026-12-07) got past that check, each reaching `admin.internal` behind the allowed
front `front.test`:

- waiting: the check gave up after 2 s and relayed whatever came next unchecked
  (`GET / HTT`, a pause, the rest; a pause before any byte; a lone 0x16, a pause,
  a ClientHello naming another server);
- a request line lenient servers read but the strict check did not recognise as
  HTTP (two spaces, tabs, a blank line first, `http/1.1`, HTTP/0.9 with an
  absolute URL): relayed raw, `Host` and pipelining included;
- a ClientHello split over two TLS records (the first without the server name).

Judged at the upstream: a lenient virtual-host server never answers the admin
host, a raw server never receives the name `admin.internal`.
"""
from __future__ import annotations

import socket
import ssl
import struct
import threading

import pytest

from sandbox.netproxy import tunnel
from tests.test_netproxy_fronting import NAME, VirtualHosts, _socks, proxied, start_proxy
from tests.test_netproxy_fronting import _connect as _connect_to, _talk as _talk_to

ADMIN_HOST = "admin.internal"


class Raw:
    """A TCP server that keeps every byte each connection sent it (and may speak first)."""

    def __init__(self, banner: bytes = b"") -> None:
        self.lst = socket.socket()
        self.lst.bind(("127.0.0.1", 0))
        self.lst.listen(16)
        self.port = self.lst.getsockname()[1]
        self.banner = banner
        self.got: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.lst.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c: socket.socket) -> None:
        c.settimeout(5)
        i = len(self.got)
        self.got.append(b"")
        try:
            if self.banner:
                c.sendall(self.banner)
            while more := c.recv(65536):
                self.got[i] += more
                c.sendall(b"echo:" + more)
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.lst.close()


def _talk(port: int, *steps: bytes | float) -> bytes:
    return _talk_to(port, *steps, read=1.5)


def _connect(upstream: int) -> bytes:
    return _connect_to(0, upstream)


PAUSE = tunnel.SNI_WAIT + 0.5
ADMIN = f"GET / HTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode()
LENIENT_LINES = {
    "two-spaces": f"GET  / HTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
    "tabs": f"GET\t/\tHTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
    "blank-line-first": f"\r\nGET / HTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
    "lower-case-version": f"GET / http/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
    "http09-absolute": f"GET http://{ADMIN_HOST}/\r\n\r\n".encode(),
    # Python's http.server splits a request line with str.split(): any whitespace of
    # latin-1, vertical tab, form feed, \x1c-\x1f, NEL and NBSP too (found 2026-12-07)
    "vertical-tab-first": f"\x0bGET / HTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
    "form-feeds": f"GET\x0c/\x0cHTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
    "nbsp": b"GET\xa0/\xa0HTTP/1.1\r\nHost: " + ADMIN_HOST.encode() + b"\r\n\r\n",
    "unit-separator": f"GET\x1f/\x1fHTTP/1.1\r\nHost: {ADMIN_HOST}\r\n\r\n".encode(),
}


@pytest.fixture
def front():
    with proxied(VirtualHosts(read_timeout=10.0)) as f:   # waits out every client pause
        yield f


@pytest.mark.parametrize("how", ["socks", "connect"])
@pytest.mark.parametrize("way", ["pause-mid-line", "pause-first", *LENIENT_LINES])
def test_a_tunnel_cannot_pass_the_http_check(front, way, how):
    vh, port, _ = front
    start = _connect(vh.port) if how == "connect" else _socks(vh.port)
    if way == "pause-mid-line":
        steps: list[bytes | float] = [start, ADMIN[:9], PAUSE, ADMIN[9:]]
    elif way == "pause-first":
        steps = [start, PAUSE, ADMIN]
    else:
        steps = [start, LENIENT_LINES[way]]
    out = _talk(port, *steps)
    assert b"ADMIN-SECRET" not in out, out
    assert all(h == f"{NAME}:{vh.port}" for h in vh.hosts), vh.hosts


def _client_hello(server_name: str) -> bytes:
    """A real ClientHello (one TLS record) naming `server_name`."""
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def _split_records(hello: bytes, at: int) -> bytes:
    """The same handshake message in two records: its first `at` bytes, then the rest."""
    version, body = hello[1:3], hello[5:]
    one, two = body[:at], body[at:]
    return (b"\x16" + version + struct.pack(">H", len(one)) + one
            + b"\x16" + version + struct.pack(">H", len(two)) + two)


def _with_server_names(hello: bytes, *lists: list[tuple[int, str]]) -> bytes:
    """`hello` (one record) with its server_name extension replaced by one extension per
    list, each listing its (name type, name) entries."""
    body = hello[5:]
    p = 4 + 2 + 32
    p += 1 + body[p]
    p += 2 + int.from_bytes(body[p:p + 2], "big")
    p += 1 + body[p]
    ext_start, ext_end = p + 2, p + 2 + int.from_bytes(body[p:p + 2], "big")
    out, q = b"", ext_start
    while q < ext_end:
        etype, elen = int.from_bytes(body[q:q + 2], "big"), int.from_bytes(body[q + 2:q + 4], "big")
        if etype == 0:
            for entries in lists:
                names = b"".join(bytes([t]) + struct.pack(">H", len(n)) + n.encode()
                                 for t, n in entries)
                ext = struct.pack(">H", len(names)) + names
                out += struct.pack(">HH", 0, len(ext)) + ext
        else:
            out += body[q:q + 4 + elen]
        q += 4 + elen
    hs_body = body[4:p] + struct.pack(">H", len(out)) + out
    hs = b"\x01" + len(hs_body).to_bytes(3, "big") + hs_body
    return hello[:3] + struct.pack(">H", len(hs)) + hs


@pytest.mark.parametrize("names", [
    [[(1, "x"), (0, ADMIN_HOST)]],            # a Go server skips the unknown type
    [[(0, NAME), (0, ADMIN_HOST)]],           # two host names: which one is read?
    [[(0, NAME)], [(0, ADMIN_HOST)]],         # two server_name extensions
])
def test_a_client_hello_names_one_server_only(names):
    """Found by probing (2026-12-07): only the first entry of the first server_name
    extension was read, so a list whose first entry was of another name type hid the
    host name a Go TLS server (Caddy, Traefik) then picks."""
    raw = Raw()
    p, port, _ = start_proxy(raw.port)
    try:
        real = _client_hello(NAME)
        assert _with_server_names(real, [(0, NAME)]) == real      # the helper rebuilds it
        _talk(port, _connect(raw.port), _with_server_names(real, *names))
        assert not any(ADMIN_HOST.encode() in g for g in raw.got), raw.got
    finally:
        p.stop()
        raw.close()


@pytest.mark.parametrize("way", ["split-early", "split-in-extensions", "lone-0x16-then-pause"])
def test_a_tunnel_cannot_hide_the_tls_server_name(way):
    raw = Raw()
    p, port, records = start_proxy(raw.port)
    try:
        hello = _client_hello(ADMIN_HOST)
        if way.startswith("split"):
            at = 40 if way == "split-early" else hello.find(ADMIN_HOST.encode()) - 5 - 9
            steps: list[bytes | float] = [_connect(raw.port), _split_records(hello, at)]
        else:
            steps = [_connect(raw.port), hello[:1], PAUSE, hello[1:]]
        _talk(port, *steps)
        assert not any(ADMIN_HOST.encode() in g for g in raw.got), raw.got
    finally:
        p.stop()
        raw.close()


def test_what_should_pass_still_passes():
    """A ClientHello naming the tunnel's host sent a few bytes at a time, a protocol
    whose server speaks first (the client answers after a pause), and a binary one."""
    raw, banner = Raw(), Raw(banner=b"220 ready\r\n")
    p, port, _ = start_proxy(raw.port)
    p2, port2, _ = start_proxy(banner.port)
    try:
        hello = _client_hello(NAME)
        _talk(port, _connect(raw.port), hello[:3], 0.2, hello[3:50], 0.2, hello[50:])
        assert raw.got[-1] == hello
        out = _talk(port2, _connect(banner.port), PAUSE, b"EHLO me\r\n")
        assert b"220 ready" in out and b"echo:EHLO me" in out
        _talk(port, _connect(raw.port), b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        assert raw.got[-1] == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
        _talk(port, _connect(raw.port), b"SSH-2.0-client\r\n")
        assert raw.got[-1] == b"SSH-2.0-client\r\n"
    finally:
        p.stop()
        p2.stop()
        raw.close()
        banner.close()


PAUSING_CLIENT = r"""
import socket, sys, time
port, pause = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", 3128))
s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % port)
s.recv(100)
req = b"GET / HTTP/1.1\r\nHost: admin.internal\r\n\r\n"
try:
    s.sendall(req[:9])
    time.sleep(pause)
    s.sendall(req[9:])
    s.settimeout(5)
    print(s.recv(1000))
except OSError as exc:
    print("cut:", exc)
"""


@pytest.mark.isolation
def test_a_sandboxed_client_cannot_outwait_the_check(tmp_path):
    """The same through the monitor's proxy, from inside a sandbox."""
    import sys
    from dataclasses import replace

    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    vh = VirtualHosts(read_timeout=10.0)
    try:
        pol = load_policy("default")
        pol = pol.replace(network=replace(pol.network, mode="allowlist", deny_private=False,
                                          allow=(f"localhost:{vh.port}",)))
        r = Launcher(capture_output=True).spawn(
            [sys.executable, "-I", "-S", "-c", PAUSING_CLIENT, str(vh.port),
             str(tunnel.SNI_WAIT + 0.5)], policy=pol, timeout=120)
        assert r.status == "ok", (r.reason, r.stderr)
        assert "ADMIN-SECRET" not in (r.stdout or "")
        assert all(h.startswith("localhost") for h in vh.hosts), vh.hosts
    finally:
        vh.close()
