"""What a sandboxed client sends the proxy: HTTP request heads and SOCKS5 requests, parsed.

Pure functions over bytes, bounded by their callers (a head is at most
`MAX_HEAD` bytes); every malformed input is a `WireError` (answered 400 or a
SOCKS failure), never an exception from deeper down. Names are returned as
the client wrote them; `rules` canonicalises and judges them.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_HEAD = 16 * 1024          # request line + headers
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers an application behind a trusted reverse proxy may take as the host or the path
# asked for (Express `trust proxy`, Django USE_X_FORWARDED_HOST, Symfony X-Original-URL):
# a sandboxed client setting them would choose another site behind the allowed one.
HOST_NAMING = {b"forwarded", b"x-forwarded-host", b"x-forwarded-server", b"x-host",
               b"x-http-host-override", b"x-original-host", b"x-original-url",
               b"x-rewrite-url", b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto",
               b"x-forwarded-port", b"x-forwarded-prefix"}
HOP_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive",
               b"te", b"trailer", b"upgrade", b"proxy-authenticate"}


class WireError(ValueError):
    """A request the proxy will not serve; the message is safe to send back."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    host: str
    port: int
    tunnel: bool              # CONNECT: relay bytes once connected
    head: bytes               # what to send upstream for plain HTTP (origin form)
    body: int = 0             # bytes of body that belong to this one request


def split_hostport(text: str, default: int | None) -> tuple[str, int]:
    """host[:port] or [v6][:port] -> (host without brackets, port)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise WireError("bad IPv6 authority")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise WireError("bad authority")
        port_text = rest[1:] if rest else ""
        if not host:
            raise WireError("empty host")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            raise WireError("an IPv6 address must be in brackets")
    if not port_text:
        if default is None:
            raise WireError("a port is required")
        return host, default
    if not port_text.isdigit() or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
        raise WireError("bad port")
    if not host:
        raise WireError("empty host")
    return host, int(port_text)


# A control character other than HTAB anywhere in a head: a bare LF or CR ends a line for
# many servers (a header the proxy never saw: a second Host, a Transfer-Encoding), a NUL
# ends a string for others. RFC 9110 field values and request lines have none.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


# Headers that say where a request ends or whom it is for; a gateway that maps names to
# variables (CGI, WSGI: HTTP_TRANSFER_ENCODING) reads an underscore in them as a dash.
_FRAMING = {b"transfer-encoding", b"content-length", b"host"}


def _request_line(head: bytes) -> tuple[bytes, str, bytes, bytes]:
    """(method, target, version, the header block) of a request head."""
    if _CONTROL.search(head.removesuffix(b"\r\n\r\n").replace(b"\r\n", b"")):
        raise WireError("a control character (a bare CR or LF, a NUL) in the request head")
    try:
        text_line, _, rest = head.partition(b"\r\n")
        parts = text_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise WireError("not an HTTP/1.x request line")
        method, target, version = parts
        if not _TOKEN.match(method):
            raise WireError("bad method")
        return method, target.decode("ascii"), version, rest
    except UnicodeDecodeError:
        raise WireError("non-ASCII request line") from None


def origin_request(head: bytes, authority: str) -> tuple[bytes, int]:
    """(the head to send upstream, its body's length) of one request for `authority`,
    the host[:port] the proxy decided on and connects to.

    The head names that authority and nothing else: the target in origin form, one
    `Host` header (the client's are dropped: a server picks its virtual host by it,
    and `Host: admin.internal` sent to an allowed front reached the admin site),
    hop-by-hop headers and those naming another host or path (`HOST_NAMING`) dropped, `Connection: close`. Exactly one request goes up a
    connection: its body is `Content-Length` bytes, a chunked body is refused (a
    second request smuggled after the first would again choose its own host), and
    a folded header line or one with a space before its colon (read differently by
    different servers) is refused."""
    method, target, version, rest = _request_line(head)
    low = target.lower()
    if low.startswith(("http://", "https://")):
        path = target.split("://", 1)[1].partition("/")
        target = "/" + path[2] if path[1] else "/"
    elif not (target.startswith("/") or (target == "*" and method == b"OPTIONS")):
        raise WireError("a request target must be a path or an absolute URL")
    lines = [b" ".join((method, target.encode("ascii"), version)),
             b"Host: " + authority.encode("ascii")]
    lengths: set[bytes] = set()
    for raw in rest.split(b"\r\n"):
        if not raw:
            continue
        if raw[:1] in (b" ", b"\t"):
            raise WireError("a folded header line")
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN.match(name or b"\0"):
            raise WireError("bad header line")
        key = name.lower()
        if b"_" in key and key.replace(b"_", b"-") in _FRAMING:
            raise WireError(f"header {name.decode()!r} is read as "
                            f"{key.replace(b'_', b'-').decode()!r} by some servers")
        if key == b"transfer-encoding":
            raise WireError("a request body in chunks (Transfer-Encoding) is not forwarded: "
                            "send its length (Content-Length)")
        if key == b"content-length":
            lengths.add(value.strip())
        if key in HOP_HEADERS or key in HOST_NAMING or key == b"host":
            continue
        lines.append(raw)
    if len(lengths) > 1 or not all(v.isdigit() and len(v) <= 15 for v in lengths):
        raise WireError("bad Content-Length")
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n", int(next(iter(lengths), b"0"))


def parse_http_head(head: bytes) -> HttpRequest:
    """A complete head (ending with CRLF CRLF). CONNECT host:port, or an absolute-form
    http:// request rewritten by `origin_request` (one request per upstream connection:
    a kept-alive client cannot send a second request, for another host, down the first
    one's pipe)."""
    method, t, _, _ = _request_line(head)
    m = method.decode("ascii")
    if m == "CONNECT":
        host, port = split_hostport(t, None)
        return HttpRequest(m, host, port, True, b"")
    low = t.lower()
    if low.startswith("https://"):
        raise WireError("https:// through a plain proxy request: use CONNECT")
    if not low.startswith("http://"):
        raise WireError("a proxy request needs an absolute http:// URL (or CONNECT)")
    authority = t[7:].partition("/")[0]
    authority = authority.rpartition("@")[2]          # no user info upstream
    if not authority:
        raise WireError("no host in the URL")
    host, port = split_hostport(authority, 80)
    out, body = origin_request(head, authority)
    return HttpRequest(m, host, port, False, out, body)


# -- SOCKS5 (RFC 1928), CONNECT only ------------------------------------------------------
SOCKS_VERSION = 5
REP_OK, REP_FAIL, REP_NOT_ALLOWED, REP_HOST_UNREACHABLE, REP_REFUSED = 0, 1, 2, 4, 5
REP_TTL, REP_COMMAND, REP_ATYP = 6, 7, 8


def socks_reply(code: int) -> bytes:
    return bytes((SOCKS_VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0))


class SocksError(WireError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def parse_socks_request(data: bytes) -> tuple[tuple[str, int], int] | None:
    """((host, port), bytes used) from a complete request, None when more is needed."""
    if len(data) < 4:
        return None
    ver, cmd, _, atyp = data[0], data[1], data[2], data[3]
    if ver != SOCKS_VERSION:
        raise SocksError("not SOCKS5", REP_FAIL)
    if cmd != 1:
        raise SocksError("only CONNECT is served (no BIND, no UDP ASSOCIATE)", REP_COMMAND)
    if atyp == 1:
        if len(data) < 10:
            return None
        host, end = str(ipaddress.IPv4Address(data[4:8])), 8
    elif atyp == 4:
        if len(data) < 22:
            return None
        host, end = str(ipaddress.IPv6Address(data[4:20])), 20
    elif atyp == 3:
        if len(data) < 5 or len(data) < 5 + data[4] + 2:
            return None
        n = data[4]
        try:
            host = data[5:5 + n].decode("ascii")
        except UnicodeDecodeError:
            raise SocksError("non-ASCII name", REP_HOST_UNREACHABLE) from None
        end = 5 + n
    else:
        raise SocksError("unknown address type", REP_ATYP)
    port = int.from_bytes(data[end:end + 2], "big")
    if port == 0:
        raise SocksError("port 0", REP_NOT_ALLOWED)
    return (host, port), end + 2


# -- TLS ClientHello: the server name -----------------------------------------------------
def client_hello_sni(data: bytes) -> str | None | bool:
    """The SNI of a TLS ClientHello at the start of `data`: the name, None when the hello
    has none, False when `data` is not (yet) one complete ClientHello record, or is one
    that servers may read as naming another server.

    Read strictly, as the most lenient server would, because the name decides where the
    tunnel may go: every extension must fit the message, and the hello must carry at
    most one server_name extension listing exactly one entry, of the host-name type (a
    Go server skips entries of other types and takes a later host name; which of two
    host names, or of two extensions, a server reads varies)."""
    if len(data) < 5 or data[0] != 0x16 or data[1] != 3:
        return False
    rec_len = int.from_bytes(data[3:5], "big")
    body = data[5:5 + rec_len]
    if len(body) < rec_len or len(body) < 4 or body[0] != 1:
        return False
    msg_end = 4 + int.from_bytes(body[1:4], "big")
    if msg_end > len(body):
        return False        # the hello goes on in a later record: its name may be there
    try:
        p = 4 + 2 + 32                      # handshake header, version, random
        p += 1 + body[p]                    # session id
        p += 2 + int.from_bytes(body[p:p + 2], "big")   # cipher suites
        p += 1 + body[p]                    # compression methods
        if p == msg_end:
            return None                     # no extensions at all
        end = p + 2 + int.from_bytes(body[p:p + 2], "big")
        if end > msg_end:
            return False
        p += 2
        names: list[bytes] = []
        while p < end:
            etype = int.from_bytes(body[p:p + 2], "big")
            elen = int.from_bytes(body[p + 2:p + 4], "big")
            if p + 4 + elen > end:
                return False
            if etype == 0:
                names.append(body[p + 4:p + 4 + elen])
            p += 4 + elen
        if not names:
            return None
        if len(names) > 1:
            return False
        ext = names[0]
        if len(ext) < 5 or int.from_bytes(ext[:2], "big") != len(ext) - 2 or ext[2] != 0:
            return False
        n = int.from_bytes(ext[3:5], "big")
        if 5 + n != len(ext):
            return False                    # another entry follows the first
        return ext[5:].decode("ascii").lower().rstrip(".")
    except (IndexError, UnicodeDecodeError):
        return False
