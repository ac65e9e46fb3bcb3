"""The first bytes of a tunnel to a name: what they may choose, decided before any goes up.

A CONNECT or SOCKS5 tunnel to an allowed name on a shared front (a CDN, a
reverse proxy with virtual hosts) must not carry a request for another server
behind it. So the client's first bytes are read before anything is relayed:

- a TLS ClientHello (first byte 0x16) whole in its first record: its server
  name (SNI), if any, must be the tunnel's name;
- anything a lenient HTTP server could read as a request line (a token, blanks,
  then a path, an absolute URL or `HTTP/`, in any case, after blank lines;
  `looks_like_http`): it must be one strict HTTP/1.x request, which is
  rewritten to name the tunnel's host and is all the tunnel carries
  (`wire.origin_request`); a lenient server reads two spaces, tabs (any
  Latin-1 whitespace for Python's http.server), a blank line first, `http/1.1` or HTTP/0.9 as a request, so these are refused, not
  relayed as "another protocol";
- anything else (a binary protocol, `SSH-2.0-...`) is relayed as it is.

After a ClientHello only that record goes up; what the client sends next is held
until the server's first answer (`after_hello`). When that answer is a TLS 1.3
HelloRetryRequest, the client sends a second ClientHello, in the clear, which the
server reads as the connection's hello: it must name the same server as the first.
Before (found by probing, 2026-12-07) a client that forced a retry (a key share of
a group the front does not take) named another site of the same front in its
second hello, and the front answered for it.

WHY IT FAILS CLOSED. Until those bytes decide, nothing goes up; bytes still
undecided after `SNI_WAIT` (a line not ended, a ClientHello not whole, a
ClientHello split over two records) are refused. Before (found by probing,
2026-12-07) the check gave up after 2 s and relayed what came next unchecked:
`GET / HTT`, a pause, then the rest reached any virtual host. A client that
sends nothing is waited for (up to the relay's idle bound) unless the server
speaks first: an HTTP server never does, and a protocol whose server does
(SMTP, FTP, MySQL) is relayed as it is.
"""
from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

from sandbox import fdwait
from sandbox.netproxy import relay, wire

SNI_WAIT = 2.0        # seconds from the client's first byte for its first bytes to decide

_TOKEN_CHARS = rb"!#$%&'*+.^_`|~0-9A-Za-z-"
# Blanks as the most lenient server reads them: Python's http.server splits a request
# line with str.split() on latin-1 text, so vertical tab, form feed, \x1c-\x1f, NEL and
# NBSP separate words too ("GET\x0b/\x0bHTTP/1.1" is a request to it).
_BLANK = rb"\t\x0b\x0c\x1c-\x1f \x85\xa0"
_LEADING = re.compile(rb"[\r\n" + _BLANK + rb"]*")
# What may still become a request line: blank lines, a method, blanks, the rest of a line.
_UNDECIDED = re.compile(rb"[\r\n" + _BLANK + rb"]*(?:[" + _TOKEN_CHARS + rb"]+(?:["
                        + _BLANK + rb"]+[^\r\n]*)?)?")
# A first line a lenient server reads as a request (HTTP/0.9 included).
_REQUEST_LIKE = re.compile(rb"[" + _TOKEN_CHARS + rb"]+[" + _BLANK + rb"]+(?:/|[^" + _BLANK
                           + rb"]*://|.*[" + _BLANK + rb"]HTTP/)", re.IGNORECASE)


# A request line with a version: what a request smuggled in a body needs to carry headers.
_VERSIONED = re.compile(rb"[" + _TOKEN_CHARS + rb"]+[" + _BLANK + rb"]+[^\r\n]*[" + _BLANK
                        + rb"]HTTP/", re.IGNORECASE)
BODY_WAIT = 10.0      # seconds for a body's first line to say whether it starts a request


# RFC 8446 4.1.3: a ServerHello whose random is this is a HelloRetryRequest.
HELLO_RETRY_RANDOM = bytes.fromhex(
    "CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
_SERVER_HELLO_SEEN = 5 + 4 + 2 + 32     # record header, handshake header, version, random
HOLD_MAX = 64 * 1024   # bytes of the client held while the server's first answer is awaited


class TunnelRefused(Exception):
    """The tunnel's first bytes are refused; the message says why (for the record)."""


@dataclass(frozen=True)
class HelloSent:
    """A ClientHello went up alone: its server name, and what the client sent after it
    (held until the server's first answer: `after_hello`)."""
    server_name: str | None
    held: bytes


def _more(conn: socket.socket, deadline: float, why: str) -> bytes:
    """The client's next bytes, if they come before `deadline`; TunnelRefused(`why`)
    when they do not or the client ended: every wait here for bytes that must decide
    fails closed."""
    left = deadline - time.monotonic()
    r, _ = fdwait.ready([conn], (), left) if left > 0 else ([], [])
    more = conn.recv(4096) if r else b""
    if not more:
        raise TunnelRefused(why)
    return more


def looks_like_http(data: bytes) -> bool | None:
    """Could a lenient HTTP server read `data` as the start of a request? None while the
    first line has not ended and could still be one."""
    if _UNDECIDED.fullmatch(data):
        return None if len(data) <= wire.MAX_HEAD else True
    return bool(_REQUEST_LIKE.match(_first_line(data)))


def _first_line(data: bytes) -> bytes:
    """The first line of `data` after leading blank lines and blanks."""
    return re.split(rb"[\r\n]", data[_LEADING.match(data).end():], maxsplit=1)[0]  # type: ignore[union-attr]


def _tls_decided(data: bytes) -> bool:
    """A ClientHello whole in its first record (or a first record that is not one)."""
    if len(data) < 5:
        return False
    return wire.client_hello_sni(data) is not False or len(data) >= 5 + \
        int.from_bytes(data[3:5], "big")


def first_bytes(conn: socket.socket, upstream: socket.socket, rest: bytes, name: str,
                port: int) -> tuple[bytes, int | None, HelloSent | None]:
    """(what goes up first, how many more client bytes may follow: None for any, and
    for a ClientHello what `after_hello` must see before the rest goes up) for a tunnel
    to `name`:`port`; TunnelRefused when the first bytes must not go up."""
    buf = rest
    if not buf:
        r, _ = fdwait.ready([conn, upstream], (), relay.IDLE_TIMEOUT)
        if conn in r:
            buf = conn.recv(4096)
            if not buf:
                return b"", None, None  # the client ended its side: nothing to check
        elif upstream in r:
            return b"", None, None      # the server speaks first: not an HTTP server
        else:
            raise TunnelRefused(f"proxy: nothing sent in {relay.IDLE_TIMEOUT:.0f} s")
    deadline = time.monotonic() + SNI_WAIT
    while True:
        tls = buf[:1] == b"\x16"
        http = None if tls else looks_like_http(buf)
        decided = _tls_decided(buf) if tls else http is False or (
            http is True and b"\r\n\r\n" in buf)
        if decided or len(buf) > wire.MAX_HEAD:
            break
        buf += _more(conn, deadline, "proxy: the first bytes of a tunnel did not say in time "
                     "what they are (a TLS ClientHello or an HTTP request head)")
    if tls:
        sni = wire.client_hello_sni(buf)
        if sni is False:
            raise TunnelRefused("proxy: TLS ClientHello not readable in its first record")
        if isinstance(sni, str) and sni != name:
            raise TunnelRefused(f"proxy: TLS server name {sni!r} differs from the "
                                f"CONNECT host {name!r}")
        end = 5 + int.from_bytes(buf[3:5], "big")
        return buf[:end], None, HelloSent(sni if isinstance(sni, str) else None, buf[end:])
    if not http:
        return buf, None, None
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        raise TunnelRefused("proxy: an HTTP request head in a tunnel not complete in time")
    authority = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
    try:
        out, length = wire.origin_request(head + sep, authority)
    except wire.WireError as exc:
        raise TunnelRefused(f"proxy: bad request in a tunnel: {exc}") from None
    sent = body_start(conn, body, length)[:length]
    return out + sent, length - len(sent), None


def is_hello_retry(data: bytes) -> bool:
    """Whether a server's first bytes are a HelloRetryRequest (a ServerHello record with
    the retry's random)."""
    return (len(data) >= _SERVER_HELLO_SEEN and data[0] == 0x16 and data[5] == 0x02
            and data[11:_SERVER_HELLO_SEEN] == HELLO_RETRY_RANDOM)


def after_hello(conn: socket.socket, upstream: socket.socket,
                sent: HelloSent) -> tuple[bytes, int]:
    """(the client's bytes that now go up, how many of the server's went down) once the
    server has answered the ClientHello that went up alone; TunnelRefused when the
    answer is a HelloRetryRequest and the client's second ClientHello does not name the
    server its first named (another, none where the first had one, or not readable).

    The client's bytes are held until the server's first bytes say whether they
    are a retry, so a second hello sent ahead, before the retry was asked for, is
    checked too; the server's bytes are passed to the client as they come. A client
    that ends its side with nothing held is not held: the relay passes its end on
    (a server may answer only then)."""
    held, first, client_open = sent.held, b"", True
    while len(first) < _SERVER_HELLO_SEEN:
        watch = [upstream, conn] if client_open and len(held) < HOLD_MAX else [upstream]
        r, _ = fdwait.ready(watch, (), relay.IDLE_TIMEOUT)
        if not r:
            raise TunnelRefused("proxy: no answer to a TLS ClientHello in "
                                f"{relay.IDLE_TIMEOUT:.0f} s")
        if conn in r:
            more = conn.recv(4096)
            held += more
            client_open = bool(more)
            if not client_open and not held:
                return b"", len(first)  # it ended with nothing more: its end goes up now
        if upstream in r:
            more = upstream.recv(4096)
            if not more:
                break
            conn.sendall(more)
            first += more
            if first[:1] != b"\x16":
                break           # not a handshake record (an alert, not TLS): no retry
    if not is_hello_retry(first):
        return held, len(first)
    deadline = time.monotonic() + SNI_WAIT
    late = "proxy: no whole second ClientHello in time after the server's HelloRetryRequest"
    while (at := _past_change_cipher_spec(held)) is None or not _tls_decided(held[at:]):
        if len(held) > HOLD_MAX:
            raise TunnelRefused(late)
        held += _more(conn, deadline, late)
    sni = wire.client_hello_sni(held[at:])
    if sni is False or sni != sent.server_name:
        raise TunnelRefused(f"proxy: the second TLS ClientHello (after a HelloRetryRequest) "
                            f"names {sni if sni is not False else 'no readable server'!r}, "
                            f"not {sent.server_name!r} as the first")
    return held, len(first)


def _past_change_cipher_spec(held: bytes) -> int | None:
    """Where the client's second flight's ClientHello starts: after at most one
    ChangeCipherSpec record of one byte (RFC 8446 D.4: the middlebox-compatibility one
    a client sends before its second hello); None while that record is not whole."""
    if held[:1] != b"\x14":
        return 0
    if len(held) < 6:
        return None
    return 6 if held[3:5] == b"\x00\x01" else 0


def body_start(conn: socket.socket, body: bytes, length: int) -> bytes:
    """`body` and what more of it `conn` sends until its first line says whether it starts
    another request; TunnelRefused when it does (or cannot say in BODY_WAIT).

    WHY: a server that ignores a request's Content-Length (a known desync, "CL.0", of
    some servers and endpoints) reads its body as the next request on the connection,
    and that request names its own host. Only a body starting with an HTTP/1.x request
    line (after blank lines, in any case) is refused."""
    if length == 0:
        return body
    deadline = time.monotonic() + BODY_WAIT
    while True:
        seen = body[:min(length, wire.MAX_HEAD)]
        if seen:
            if _UNDECIDED.fullmatch(seen) is None:
                if _VERSIONED.match(_first_line(seen)):
                    raise TunnelRefused("proxy: a request body that starts another request "
                                        "(a server ignoring Content-Length would read it so)")
                return body
            if len(seen) == length:
                return body         # all of it, and no line of it ended: no request
            if len(seen) == wire.MAX_HEAD:   # a line longer than a head: a request's?
                if re.match(rb"[\r\n" + _BLANK + rb"]*[" + _TOKEN_CHARS + rb"]+[" + _BLANK + rb"]",
                            seen):
                    raise TunnelRefused("proxy: a request body that may start another "
                                        "request (a first line over 16 KiB)")
                return body
        body += _more(conn, deadline,
                      "proxy: a request body whose first line did not end in time")
