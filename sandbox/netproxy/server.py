"""The policy proxy: served by the monitor on a socket listening inside the sandbox.

PID 1 binds 127.0.0.1:3128 in the sandbox's network namespace and hands the
listening descriptor to the monitor (`inside.py`); no process of the sandbox
holds it afterwards, and the sandbox cannot bind that address again, so every
connection to it is accepted here, outside every restriction. One port
speaks HTTP CONNECT, plain HTTP forwarding (absolute http:// URLs) and SOCKS5
(told apart by the first byte).

For each connection: parse the request (bounded head, bounded time), decide
with `rules.Allowlist` (an IP literal at once; a name against the entries,
then resolved here, on the host, with every address checked), connect to an
address that was checked (pinned: no second lookup), and relay bytes until
either side ends. A CONNECT to a name whose first bytes are a TLS ClientHello
naming another server (SNI) is cut: an allowed name on a shared front
(a CDN) must not carry a request for a name the policy refused. For the same
reason a cleartext HTTP request names only the host the proxy decided on,
whatever its `Host` header said, and is the only request its connection
carries (`wire.origin_request`), through the plain proxy or inside a tunnel.

Each attempt is one `ConnRecord` handed to `record` (the run's audit store).

WHAT THE SANDBOX CAN MAKE THE MONITOR PAY (issue 11's amplification rules,
docs/threat-model.md): at most `MAX_CONNECTIONS` connections at once (one
thread each; more are closed at once and recorded), a head of at most
`wire.MAX_HEAD` bytes read within `HEAD_TIMEOUT`, `CONNECT_TIMEOUT` to reach
the upstream, and the relay's own bounds (`relay.py`: idle time, one buffer
per direction, the monitor's CPU). Everything ends with the run (`stop`).
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable

from sandbox import fdwait
from sandbox.netproxy import relay, tunnel, wire
from sandbox.netproxy.rules import Allowlist, Verdict, normalize_name, parse_addr

MAX_CONNECTIONS = 64
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
STOP_WAIT = 2.0                  # seconds the end of a run waits for connection threads


@dataclass
class ConnRecord:
    """One connection attempt, as the audit store and the RunResult summary see it."""
    proto: str                   # http | connect | socks5 | unknown
    host: str
    port: int
    allowed: bool
    rule: str
    resolved: list[str] = field(default_factory=list)
    address: str = ""            # the address connected to (pinned)
    result: str = ""             # ok | refused | 403 | connect failed: ... | ...
    up: int = 0                  # bytes from the sandbox to the upstream
    down: int = 0
    duration: float = 0.0
    pid: int = 0                 # unknown: a TCP peer has no SO_PEERCRED (stored as 0)

    def flags_text(self) -> str:
        parts = [f"proto={self.proto}"]
        if self.resolved:
            parts.append("resolved=" + ",".join(self.resolved))
        if self.address:
            parts.append(f"address={self.address}")
        parts += [f"up={self.up}", f"down={self.down}", f"ms={self.duration * 1000:.1f}"]
        return " ".join(parts)


def lookup(name: str, port: int) -> list[str]:
    """The host's answer for `name` (getaddrinfo, TCP), in its order, deduplicated."""
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in out:
            out.append(addr)
    return out


@dataclass(frozen=True)
class _Pending:
    """What goes up first, and how many more bytes of the client may follow it (None:
    any; a tunnel relays until either side ends)."""
    data: bytes
    more: int | None = None
    hello: tunnel.HelloSent | None = None   # a ClientHello: `tunnel.after_hello` first


_NOTHING = _Pending(b"")


def _one_request(head: bytes, body: int, rest: bytes) -> _Pending:
    """One request's head and body, whatever the client sent after it."""
    sent = rest[:body]
    return _Pending(head + sent, body - len(sent))


class _Refused(Exception):
    def __init__(self, verdict: Verdict, resolved: list[str]) -> None:
        super().__init__(verdict.rule)
        self.verdict, self.resolved = verdict, resolved


class ProxyServer:
    def __init__(self, listener: socket.socket, allowlist: Allowlist,
                 record: Callable[[ConnRecord], None],
                 over_budget: Callable[[], bool] = lambda: False,
                 resolve: Callable[[str, int], list[str]] = lookup,
                 meter: Any = None) -> None:
        self.listener = listener
        self.allowlist = allowlist
        self.record = record
        self.over_budget = over_budget
        self.resolve = resolve
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.stopping = False
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.relayed = 0
        self._wake_r, self._wake_w = socket.socketpair()
        from sandbox.monitor.cost import ThreadMeter
        self.meter = meter if meter is not None else ThreadMeter()   # the run's CPU here
        self.thread = threading.Thread(target=self.meter.run, args=(self._accept_loop,),
                                       name="netproxy", daemon=True)

    def start(self) -> "ProxyServer":
        self.listener.setblocking(False)
        self.thread.start()
        return self

    # -- accept ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.stopping:
            try:
                ready, _ = fdwait.ready([self.listener, self._wake_r])
            except (OSError, ValueError):
                return
            if self._wake_r in ready or self.stopping:
                return
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            conn.setblocking(True)
            try:
                relay.bound_buffers(conn)
            except OSError:
                conn.close()
                continue
            pid = 0
            if not self.slots.acquire(blocking=False):
                conn.close()
                self.record(ConnRecord("unknown", "", 0, False,
                                       f"proxy: connection limit ({MAX_CONNECTIONS} at once)",
                                       result="closed", pid=pid))
                continue
            with self.lock:
                self.conns.add(conn)
                self.threads = [t for t in self.threads if t.is_alive()]
                t = threading.Thread(target=self.meter.run, args=(self._serve, conn, pid),
                                     daemon=True, name="netproxy-conn")
                self.threads.append(t)
            t.start()

    def stop(self) -> None:
        """The run is over: no new connection, every open one cut, threads joined briefly."""
        self.stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(1.0)
        with self.lock:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self.threads)
        deadline = time.monotonic() + STOP_WAIT    # one bound for all: a thread in a
        for t in threads:                          # lookup or a connect cannot be woken
            t.join(max(0.0, deadline - time.monotonic()))
        for s in (self.listener, self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass

    # -- one connection -------------------------------------------------------------------
    def _serve(self, conn: socket.socket, pid: int) -> None:
        rec = ConnRecord("unknown", "", 0, False, "", pid=pid)
        t0 = time.monotonic()
        upstream: socket.socket | None = None
        try:
            conn.settimeout(HEAD_TIMEOUT)
            first = conn.recv(1)
            if not first:
                return   # opened and closed: nothing asked, nothing recorded
            if first[0] == wire.SOCKS_VERSION:
                rec.proto = "socks5"
                upstream, pending = self._socks(conn, rec, t0 + HEAD_TIMEOUT)
            else:
                upstream, pending = self._http(conn, first, rec, t0)
            if upstream is None:
                return
            with self.lock:
                self.conns.add(upstream)
            if pending.data:
                upstream.sendall(pending.data)
                rec.up += len(pending.data)
            if pending.hello is not None:
                with _refusing(rec):
                    held, down = tunnel.after_hello(conn, upstream, pending.hello)
                rec.down += down
                upstream.sendall(held)
                rec.up += len(held)
            relay.relay(conn, upstream, rec, pending.more, lambda: self.stopping, self.over_budget)
            rec.result = rec.result or "ok"
        except _Refused as r:
            rec.allowed, rec.rule, rec.resolved = False, r.verdict.rule, r.resolved
            rec.result = rec.result or "refused"
        except (OSError, wire.WireError) as exc:
            if not rec.result:
                rec.result = f"error: {exc}"[:200]
        finally:
            rec.duration = time.monotonic() - t0
            for s in (conn, upstream):
                if s is not None:
                    with self.lock:
                        self.conns.discard(s)
                    try:
                        s.close()
                    except OSError:
                        pass
            self.slots.release()
            if rec.host or rec.rule:
                try:
                    self.record(rec)
                except Exception:
                    pass   # the store reports its own failures; a connection never does

    def _read_head(self, conn: socket.socket, buf: bytes, t0: float) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in buf:
            if len(buf) > wire.MAX_HEAD:
                raise wire.WireError(f"request head over {wire.MAX_HEAD} bytes")
            more = _recv_before(conn, 4096, t0 + HEAD_TIMEOUT)
            if not more:
                raise wire.WireError("closed before the request head ended")
            buf += more
        head, _, rest = buf.partition(b"\r\n\r\n")
        if len(head) > wire.MAX_HEAD:
            raise wire.WireError(f"request head over {wire.MAX_HEAD} bytes")
        return head + b"\r\n\r\n", rest

    def _http(self, conn: socket.socket, first: bytes, rec: ConnRecord,
              t0: float) -> tuple[socket.socket | None, _Pending]:
        try:
            head, rest = self._read_head(conn, first, t0)
            req = wire.parse_http_head(head)
        except wire.WireError as exc:
            rec.proto, rec.rule, rec.result = "http", f"proxy: bad request: {exc}", "400"
            _http_reply(conn, 400, "Bad Request", str(exc))
            return None, _NOTHING
        rec.proto = "connect" if req.tunnel else "http"
        rec.host, rec.port = req.host, req.port
        if req.body:
            try:
                rest = tunnel.body_start(conn, rest, req.body)
            except tunnel.TunnelRefused as exc:
                rec.rule, rec.result = str(exc), "400"
                _http_reply(conn, 400, "Bad Request", str(exc))
                return None, _NOTHING
        try:
            upstream = self._open(rec)
        except _Refused as r:
            rec.result = "403"
            _http_reply(conn, 403, "Forbidden", r.verdict.rule)
            raise
        except OSError as exc:
            rec.result = f"502: {exc.strerror or exc}"
            _http_reply(conn, 502, "Bad Gateway", f"cannot connect: {exc.strerror or exc}")
            return None, _NOTHING
        if req.tunnel:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return upstream, self._tunnel_start(conn, upstream, rest, rec)
        return upstream, _one_request(req.head, req.body, rest)

    def _socks(self, conn: socket.socket, rec: ConnRecord,
               deadline: float) -> tuple[socket.socket | None, _Pending]:
        """The greeting and the request, whole before `deadline` (as an HTTP head)."""
        n = _recv_exact(conn, 1, deadline)[0]
        methods = _recv_exact(conn, n, deadline) if n else b""
        if 0 not in methods:
            conn.sendall(b"\x05\xff")
            rec.rule, rec.result = "proxy: SOCKS5 without the no-authentication method", "refused"
            return None, _NOTHING
        conn.sendall(b"\x05\x00")
        buf = b""
        while True:
            try:
                parsed = wire.parse_socks_request(buf)
            except wire.SocksError as exc:
                conn.sendall(wire.socks_reply(exc.code))
                rec.rule, rec.result = f"proxy: {exc}", "refused"
                return None, _NOTHING
            if parsed is not None:
                break
            if len(buf) > 300:
                raise wire.WireError("SOCKS5 request too long")
            more = _recv_before(conn, 300, deadline)
            if not more:
                return None, _NOTHING
            buf += more
        (rec.host, rec.port), used = parsed
        try:
            upstream = self._open(rec)
        except _Refused:
            rec.result = "refused"
            conn.sendall(wire.socks_reply(wire.REP_NOT_ALLOWED))
            raise
        except OSError as exc:
            rec.result = f"connect failed: {exc.strerror or exc}"
            conn.sendall(wire.socks_reply(wire.REP_REFUSED))
            return None, _NOTHING
        conn.sendall(wire.socks_reply(wire.REP_OK))
        return upstream, self._tunnel_start(conn, upstream, buf[used:], rec)

    def _open(self, rec: ConnRecord) -> socket.socket:
        """Decide, resolve on the host, check every address, connect to a checked one."""
        early, rule = self.allowlist.needs_lookup(rec.host, rec.port)
        if early is not None and not early.allowed:
            raise _Refused(early, [])
        if early is not None:
            verdict = early
        else:
            assert rule is not None
            name = normalize_name(rec.host) or rec.host
            rec.resolved = self.resolve(name, rec.port)
            addrs = [a for a in (parse_addr(x) for x in rec.resolved) if a is not None]
            verdict = self.allowlist.decide_resolved(rule, rec.port, addrs)
            if not verdict.allowed:
                raise _Refused(verdict, rec.resolved)
        rec.allowed, rec.rule = True, verdict.rule
        err: OSError | None = None
        deadline = time.monotonic() + CONNECT_TIMEOUT
        for addr in verdict.addresses:
            fam = socket.AF_INET6 if addr.version == 6 else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            relay.bound_buffers(s)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                s.connect((str(addr), rec.port))     # the checked address, never the name
            except OSError as exc:
                s.close()
                err = exc
                continue
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rec.address = str(addr)
            return s
        raise err or OSError("no address to connect to")

    def _tunnel_start(self, conn: socket.socket, upstream: socket.socket, rest: bytes,
                      rec: ConnRecord) -> _Pending:
        """A tunnel to a name: what the client says first must not choose another server
        (`tunnel.first_bytes`: the TLS server name, or one rewritten HTTP request)."""
        name = normalize_name(rec.host)
        if name is None or parse_addr(rec.host) is not None:
            return _Pending(rest)
        with _refusing(rec):
            data, more, hello = tunnel.first_bytes(conn, upstream, rest, name, rec.port)
        return _Pending(data, more, hello)


@contextlib.contextmanager
def _refusing(rec: ConnRecord) -> Iterator[None]:
    """A tunnel's refusal (`tunnel.TunnelRefused`: its first bytes, or its second TLS
    hello) recorded as the connection's and raised as a refusal."""
    try:
        yield
    except tunnel.TunnelRefused as exc:
        rec.allowed, rec.rule = False, str(exc)
        raise _Refused(Verdict(False, rec.rule), rec.resolved) from None


def _recv_before(conn: socket.socket, size: int, deadline: float) -> bytes:
    """One read that ends by `deadline` (monotonic): the bound is on the whole head, so a
    byte every few seconds does not keep a slot (a thread, a descriptor) for long."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise wire.WireError("request head not complete in time")
    conn.settimeout(left)
    return conn.recv(size)


def _recv_exact(conn: socket.socket, n: int, deadline: float) -> bytes:
    out = b""
    while len(out) < n:
        more = _recv_before(conn, n - len(out), deadline)
        if not more:
            raise wire.WireError("closed mid-request")
        out += more
    return out


def _http_reply(conn: socket.socket, code: int, reason: str, text: str) -> None:
    body = f"sandbox proxy: {text}\n".encode("utf-8", "replace")[:2048]
    head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            f"X-Sandbox-Proxy: refused\r\n\r\n").encode()
    try:
        conn.sendall(head + body)
    except OSError:
        pass
