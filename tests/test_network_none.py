"""With network "none", a connect is "Network is unreachable", at once, and recorded.

Landlock refuses a TCP connect with EACCES, which clients read as a refusal
worth retrying: `wget http://127.0.0.1:1/` tried twenty times and ran into the
wall limit (60 s) where directly it ended at once. The monitor, which is
notified of every connect under a private network, now answers an IPv4 or
IPv6 connect ENETUNREACH itself, what the network namespace alone says, and
never lets one through; Landlock and the namespace stay behind it. Judged from
the host: a real listener on the host's loopback sees nothing.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation
SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")

CONNECTS = r"""
import ctypes, errno, socket, struct, sys
port = int(sys.argv[1])
res = {}
def attempt(key, family, kind, addr, blocking=True):
    s = socket.socket(family, kind)
    s.setblocking(blocking)
    try:
        s.connect(addr)
        res[key] = "connected"
    except OSError as e:
        res[key] = errno.errorcode.get(e.errno, e.errno)
    return s
attempt("host_port", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port))
attempt("closed_port", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 1))
attempt("remote", socket.AF_INET, socket.SOCK_STREAM, ("10.1.2.3", 80))
attempt("nonblocking", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", port), False)
attempt("v6", socket.AF_INET6, socket.SOCK_STREAM, ("::1", port))
attempt("v4_mapped", socket.AF_INET6, socket.SOCK_STREAM, ("::ffff:127.0.0.1", port))
u = attempt("udp", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 53))
# connect(AF_UNSPEC) dissolves a datagram socket's association: still the kernel's
libc = ctypes.CDLL(None, use_errno=True)
res["unspec"] = libc.connect(u.fileno(), struct.pack("H14x", 0), 16)
print(repr(res))
"""


class HostListener:
    """A TCP listener on the host's loopback that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            c.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    lst = HostListener()
    yield lst
    lst.close()


def _spawn(tmp_path, py, code: str, args: list[str]):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    pol = load_policy("strict")
    pol = pol.replace(network=replace(pol.network, mode="none"))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit.sqlite")
    r = la.spawn([py, "-I", "-c", code, *args], policy=pol, timeout=90)
    assert r.status == "ok", (r.status, r.reason, r.stderr[-2000:])
    return r, eval(r.stdout)


def test_every_inet_connect_is_unreachable_and_recorded(tmp_path, py, listener):
    r, seen = _spawn(tmp_path, py, CONNECTS, [str(listener.port)])
    for key in ("host_port", "closed_port", "remote", "nonblocking", "v6", "v4_mapped", "udp"):
        assert seen[key] == "ENETUNREACH", (key, seen)
    assert seen["unspec"] == 0
    assert listener.accepted == 0
    refused = {d["path"] for d in r.denied
               if d["operation"] == "connect" and d["rule"].startswith("network.none")}
    assert {f"127.0.0.1:{listener.port}", "127.0.0.1:1", "10.1.2.3:80",
            "127.0.0.1:53"} <= refused, r.denied


FLIP = r"""
import ctypes, errno, socket, struct, sys, threading
port = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(16)
inet = struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton("127.0.0.1") + bytes(8)
unspec = bytes(16)
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, unspec, 16); ctypes.memmove(buf, inet, 16)
ctypes.memmove(buf, inet, 16)
t = threading.Thread(target=flip); t.start()
seen = {}
for _ in range(1000):
    s = socket.socket()
    rc = libc.connect(s.fileno(), buf, 16)
    key = errno.errorcode.get(ctypes.get_errno(), "?")
    if rc == 0:   # connect(AF_UNSPEC) on a TCP socket is a no-op that returns 0
        try:
            s.getpeername(); key = "connected"
        except OSError:
            key = "unspec"
    seen[key] = seen.get(key, 0) + 1
    s.close()
stop = True; t.join()
print(repr(seen))
"""


def test_an_address_flipped_to_unspec_meets_the_kernel_layers(tmp_path, py, listener):
    """What the monitor reads is advisory: an address flipped after its look is
    CONTINUEd to the kernel, where Landlock (EACCES) or the empty namespace decides."""
    _, seen = _spawn(tmp_path, py, FLIP, [str(listener.port)])
    assert sum(seen.values()) == 1000
    assert set(seen) <= {"ENETUNREACH", "EACCES", "unspec"}, seen
    assert seen.get("ENETUNREACH", 0) > 0
    assert listener.accepted == 0


def test_wget_gives_up_at_once_with_a_hint(tmp_path):
    """wget retries EACCES (20 tries, backoff to 10 s), never ENETUNREACH."""
    assert shutil.which("wget"), "needs wget (scripts/install.sh installs it)"
    proc = subprocess.run([SANDBOX, "exec", "--policy", "strict", "--timeout", "30", "--",
                           "wget", "-O-", "http://127.0.0.1:1/"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr       # wget's "network failure"
    assert "Network is unreachable" in proc.stderr
    assert "Retrying" not in proc.stderr
    assert 'the sandbox has no network (network mode "none"' in proc.stderr


def test_a_route_probe_to_port_0_gets_no_network_hint(tmp_path, py):
    """getaddrinfo sorts its answers by a UDP connect to each address, port 0, and
    git's identity probe does that: the run that failed for another reason was told
    it needed the network. A port-0 connect is refused and recorded, never hinted."""
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "try:\n    s.connect(('127.0.1.1', 0))\nexcept OSError:\n    pass\n"
             "sys.exit(3)\n")
    proc = subprocess.run([SANDBOX, "exec", "--policy", "strict", "--", py, "-c", probe],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "no network" not in proc.stderr, proc.stderr
