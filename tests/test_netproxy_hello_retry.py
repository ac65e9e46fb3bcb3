"""A TLS 1.3 HelloRetryRequest cannot carry a tunnel to another server of a shared front.

The proxy reads a tunnel's first ClientHello and holds its server name to the
tunnel's host (tests/test_netproxy_tunnel_start.py). In TLS 1.3 a server that wants
another key share answers that hello with a HelloRetryRequest, and the client sends a
second ClientHello, still in the clear, which the front reads as the connection's
hello: a client can force the retry (a key share of a group the server does not take)
and name another site of the same front in the second hello. Before (the proxy's
known gap until 2026-12-07) the second hello went up unchecked: the front below
answered it for `admin.internal`.

Judged from the front's side: the names it read in every ClientHello it was sent.
"""
from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
from typing import Any

import pytest

from sandbox.netproxy import tunnel, wire
from tests.test_netproxy_fronting import NAME, _connect as _connect_to, _talk, proxied, start_proxy
from tests.test_netproxy_tunnel_start import ADMIN_HOST, Raw, _client_hello

# RFC 8446 4.1.3: a ServerHello whose random is this is a HelloRetryRequest
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
CCS = b"\x14\x03\x03\x00\x01\x01"     # the middlebox-compatibility ChangeCipherSpec


def _hello_retry_request() -> bytes:
    """A HelloRetryRequest record: TLS_AES_128_GCM_SHA256, TLS 1.3, asking for P-256."""
    ext = (struct.pack(">HHH", 0x002B, 2, 0x0304)        # supported_versions: TLS 1.3
           + struct.pack(">HHH", 0x0033, 2, 0x0017))     # key_share: secp256r1
    body = (b"\x03\x03" + HRR_RANDOM + b"\x00" + b"\x13\x01" + b"\x00"
            + struct.pack(">H", len(ext)) + ext)
    msg = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack(">H", len(msg)) + msg


def _records(data: bytes) -> list[bytes]:
    """The whole TLS records at the start of `data`."""
    out = []
    while len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
        n = 5 + int.from_bytes(data[3:5], "big")
        out.append(data[:n])
        data = data[n:]
    return out


class RetryingFront(Raw):
    """A shared front that answers every first ClientHello with a HelloRetryRequest and
    keeps the server name of every ClientHello it reads (None: none; False: unreadable)."""

    def __init__(self) -> None:
        self.names: list[str | None | bool] = []
        super().__init__()

    def _one(self, c: socket.socket) -> None:
        c.settimeout(5)
        got, hellos = b"", 0
        try:
            while more := c.recv(65536):
                got += more
                for record in _records(got):
                    got = got[len(record):]
                    if record[0] != 0x16:
                        continue
                    self.names.append(wire.client_hello_sni(record))
                    hellos += 1
                    if hellos == 1:
                        c.sendall(_hello_retry_request())
        except OSError:
            pass
        finally:
            c.close()


@pytest.fixture
def front():
    with proxied(RetryingFront()) as f:
        yield f


def _tunnel(upstream: int) -> tuple[socket.socket, Any]:
    """A CONNECT tunnel to NAME:`upstream` through a proxy allowing it: (the client's
    socket, the proxy to stop)."""
    p, port, _ = start_proxy(upstream)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(_connect_to(0, upstream))
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    return s, p


@pytest.mark.parametrize("way", ["after-the-retry", "with-a-ccs-first", "blind-in-one-send",
                                 "without-a-name"])
def test_a_second_client_hello_cannot_name_another_server(front, way):
    f, port, _ = front
    first, second = _client_hello(NAME), _client_hello(ADMIN_HOST)
    if way == "after-the-retry":
        steps: list[bytes | float] = [first, 0.5, second]
    elif way == "with-a-ccs-first":
        steps = [first, 0.5, CCS + second]
    elif way == "blind-in-one-send":       # sent before the retry was asked for
        steps = [first + CCS + second]
    else:       # no name at all: the front would pick its default site
        nameless = ssl.create_default_context()
        nameless.check_hostname = False
        obj = nameless.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO())
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        steps = [first, 0.5, out.read()]
    out = _talk(port, _connect_to(0, f.port), *steps, read=2.0)
    assert f.names[:1] == [NAME], f.names
    assert ADMIN_HOST not in f.names and None not in f.names, f.names
    assert len(f.names) == 1, f.names        # the second hello never went up
    assert _hello_retry_request() in out     # the client was told what the front asked


def test_the_same_name_again_goes_up(front):
    f, port, _ = front
    hello = _client_hello(NAME)
    out = _talk(port, _connect_to(0, f.port), hello, 0.5, CCS + hello, read=1.0)
    assert _hello_retry_request() in out
    assert f.names == [NAME, NAME], f.names


def test_a_real_handshake_with_a_retry_passes(tmp_path, monkeypatch):
    """A TLS 1.3 server that takes only P-256 against a client that offers X25519 first:
    the retry happens (seen by the proxy), and the handshake and a message both ways
    complete through the tunnel."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={NAME}",
                    "-addext", f"subjectAltName=DNS:{NAME}", "-days", "1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    server_ctx.load_cert_chain(cert, key)
    server_ctx.set_ecdh_curve("prime256v1")
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)

    def serve() -> None:
        c, _ = lst.accept()
        with server_ctx.wrap_socket(c, server_side=True) as t:
            t.sendall(b"front: " + t.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    retries: list[bool] = []
    real = tunnel.is_hello_retry
    monkeypatch.setattr(tunnel, "is_hello_retry", lambda data: retries.append(real(data))
                        or retries[-1])
    s, p = _tunnel(lst.getsockname()[1])
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        with client_ctx.wrap_socket(s, server_hostname=NAME) as t:
            assert t.version() == "TLSv1.3"
            t.sendall(b"hello")
            assert t.recv(100) == b"front: hello"
        assert retries == [True], "the server was to ask for another key share"
    finally:
        p.stop()
        lst.close()


def test_a_client_that_ends_after_its_hello_is_not_held(tmp_path):
    """A client that sends its ClientHello and ends its side: the end goes up at once, as
    it did before the hold (a server that answers only at the client's end answers)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)

    def serve() -> None:
        c, _ = lst.accept()
        c.settimeout(10)
        got = b""
        while more := c.recv(65536):
            got += more
        c.sendall(b"got %d bytes" % len(got))
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    s, p = _tunnel(lst.getsockname()[1])
    try:
        hello = _client_hello(NAME)
        s.sendall(hello)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == b"got %d bytes" % len(hello)
    finally:
        p.stop()
        lst.close()
