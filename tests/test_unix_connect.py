"""Issue 10, finding 6: with network "none", no pathname UNIX socket outside the sandbox.

A program connected to a fake Docker socket in its read-only workdir and got
answers. Judged from the host: a listener in a host directory the policy
grants read-only never sees a connection or a datagram unless the policy
names it in ``[network] unix``; the sandbox's own sockets keep working; a
thread flipping the address buffer between its own socket and the host's
never gets through.
"""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation

CLIENT = r"""
import errno, os, socket, sys, threading
host_stream, host_dgram = sys.argv[1], sys.argv[2]
res = {}
def attempt(key, f):
    try:
        res[key] = f()
    except OSError as e:
        res[key] = "errno:%d" % e.errno
def talk(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    return s.recv(16).decode()
attempt("stream", lambda: talk(host_stream))
os.symlink(host_stream, "/tmp/via_link")
attempt("link", lambda: talk("/tmp/via_link"))
os.chdir(os.path.dirname(host_stream))
attempt("relative", lambda: talk(os.path.basename(host_stream)))
os.chdir("/")
d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
attempt("dgram", lambda: d.sendto(b"leak", host_dgram))
attempt("dgram_msg", lambda: d.sendmsg([b"leak"], [], 0, host_dgram))
# the sandbox's own sockets keep working: stream, datagram, abstract
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind("/tmp/own.sock"); srv.listen(4)
def serve():
    for _ in range(2):
        c, _ = srv.accept(); c.sendall(b"OWN"); c.close()
threading.Thread(target=serve, daemon=True).start()
attempt("own", lambda: talk("/tmp/own.sock"))
os.chdir("/tmp")
attempt("own_relative", lambda: talk("own.sock"))
r = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); r.bind("/tmp/own.dgram")
attempt("own_dgram", lambda: (d.sendto(b"x", "/tmp/own.dgram"), r.recv(8).decode())[1])
a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); a.bind(b"\0sbx-own"); a.listen(1)
attempt("abstract", lambda: socket.socket(socket.AF_UNIX).connect(b"\0sbx-own"))
print(repr(res))
"""


class HostServers:
    """A stream listener answering HELLO and a datagram socket, counting what arrives."""

    def __init__(self, d) -> None:
        self.stream_path, self.dgram_path = str(d / "docker.sock"), str(d / "log.dgram")
        self.stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stream.bind(self.stream_path)
        self.stream.listen(64)
        self.stream.settimeout(0.2)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(self.dgram_path)
        self.dgram.settimeout(0.2)
        os.chmod(self.stream_path, 0o777)
        os.chmod(self.dgram_path, 0o777)
        self.connections = 0
        self.datagrams = 0
        self.stop = False
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._recv, daemon=True)]
        for t in self.threads:
            t.start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                c, _ = self.stream.accept()
            except OSError:
                continue
            self.connections += 1
            try:
                c.sendall(b"HELLO")
            except OSError:
                pass
            c.close()

    def _recv(self) -> None:
        while not self.stop:
            try:
                self.dgram.recv(64)
            except OSError:
                continue
            self.datagrams += 1

    def close(self) -> None:
        self.stop = True
        for t in self.threads:
            t.join(2)
        self.stream.close()
        self.dgram.close()


def _run(tmp_path, py, code: str, args: list[str], unix: tuple[str, ...] = ()):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    host = tmp_path / "host"
    pol = load_policy("strict")
    pol = pol.replace(filesystem=replace(pol.filesystem, read=pol.filesystem.read + (str(host),)),
                      network=replace(pol.network, mode="none", **({"unix": unix} if unix else {})))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit.sqlite")
    r = la.spawn([py, "-I", "-c", code, *args], policy=pol, timeout=90)
    assert r.status == "ok", (r.status, r.reason, r.stderr[-2000:])
    return r, eval(r.stdout)


@pytest.fixture
def host(tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    d.chmod(0o755)
    tmp_path.chmod(0o755)
    servers = HostServers(d)
    yield servers
    servers.close()


def test_host_sockets_are_out_of_reach_and_own_sockets_work(tmp_path, py, host):
    r, seen = _run(tmp_path, py, CLIENT, [host.stream_path, host.dgram_path])
    for key in ("stream", "link", "relative", "dgram", "dgram_msg"):
        assert seen[key] == "errno:13", (key, seen[key])          # EACCES
    assert host.connections == 0 and host.datagrams == 0
    assert seen["own"] == "OWN" and seen["own_relative"] == "OWN"
    assert seen["own_dgram"] == "x"
    assert seen["abstract"] is None
    refused = [d for d in r.denied if d["path"] == host.stream_path]
    assert refused and all(d["rule"].startswith("network.unix") for d in refused)


def test_a_socket_the_policy_names_is_reachable(tmp_path, py, host):
    code = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n"
            "s.connect(sys.argv[1])\nprint(repr(s.recv(16).decode()))")
    _, seen = _run(tmp_path, py, code, [host.stream_path], unix=(host.stream_path,))
    assert seen == "HELLO"
    assert host.connections == 1


RACE = r"""
import ctypes, os, socket, sys, threading
host, own = sys.argv[1].encode(), b"/tmp/own.sock"
srv = socket.socket(socket.AF_UNIX); srv.bind(own); srv.listen(128)
def serve():
    while True:
        c, _ = srv.accept(); c.close()
threading.Thread(target=serve, daemon=True).start()
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(110)
def put(p):
    ctypes.memmove(ctypes.addressof(buf), (1).to_bytes(2, "little") + p + b"\0", len(p) + 3)
stop = False
def flip():
    while not stop:
        put(host); put(own)
put(own)
t = threading.Thread(target=flip); t.start()
ok = refused = 0
for _ in range(2000):
    s = socket.socket(socket.AF_UNIX)
    if libc.connect(s.fileno(), buf, 110) == 0:
        ok += 1
    else:
        refused += 1
    s.close()
stop = True; t.join()
print(repr({"ok": ok, "refused": refused}))
"""


def test_a_flipped_address_never_reaches_the_host(tmp_path, py, host):
    _, seen = _run(tmp_path, py, RACE, [host.stream_path])
    assert seen["ok"] + seen["refused"] == 2000
    assert host.connections == 0, seen
