"""With network "none", a TCP bind is refused, recorded and hinted (probe M5).

Landlock refuses a TCP bind under "none" with EACCES, and nothing said why: a
test suite that starts a local server got `PermissionError` and no pointer,
where a connect was recorded and told "--net loopback gives it its own
loopback". The monitor is now notified of bind under "none" (only for the
address lengths of IPv4 and IPv6: a UNIX bind is not its business) and answers
an IPv4/IPv6 TCP bind EACCES itself, what Landlock would say, recorded with
the rule; it never lets a checked address through. A UDP or UNIX bind is the
kernel's as before. Judged by the run's result and the CLI's stderr.
"""
from __future__ import annotations


import os
import subprocess
import sys
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation
SANDBOX = os.path.join(os.path.dirname(sys.executable), "sandbox")

BINDS = r"""
import errno, socket
res = {}
def attempt(key, family, kind, addr):
    s = socket.socket(family, kind)
    try:
        s.bind(addr)
        res[key] = "bound"
    except OSError as e:
        res[key] = errno.errorcode.get(e.errno, e.errno)
    s.close()
attempt("tcp", socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 8000))
attempt("tcp_any", socket.AF_INET, socket.SOCK_STREAM, ("0.0.0.0", 0))
attempt("tcp6", socket.AF_INET6, socket.SOCK_STREAM, ("::1", 8001))
attempt("udp", socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 8002))
attempt("unix", socket.AF_UNIX, socket.SOCK_STREAM, "/tmp/s.sock")
# an abstract name whose address length is an IPv4 one's (16): notified, the kernel's
attempt("unix16", socket.AF_UNIX, socket.SOCK_STREAM, "\0" + "u" * 13)
print(repr(res))
"""


def _spawn(tmp_path, py, mode: str):
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    pol = load_policy("strict")
    pol = pol.replace(network=replace(pol.network, mode=mode))
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit.sqlite")
    r = la.spawn([py, "-I", "-c", BINDS], policy=pol, timeout=90)
    assert r.status == "ok", (r.status, r.reason, r.stderr[-2000:])
    return r, eval(r.stdout)


def test_a_tcp_bind_under_none_is_refused_and_recorded(tmp_path, py):
    r, seen = _spawn(tmp_path, py, "none")
    assert seen == {"tcp": "EACCES", "tcp_any": "EACCES", "tcp6": "EACCES",
                    "udp": "bound", "unix": "bound", "unix16": "bound"}, seen
    binds = {(d["path"], d["rule"]) for d in r.denied if d.get("operation") == "bind"}
    assert ("127.0.0.1:8000", "network.none: the sandbox has no network") in binds, r.denied
    assert ("[::1]:8001", "network.none: the sandbox has no network") in binds, r.denied
    assert any(p == "0.0.0.0:0" for p, _ in binds), r.denied


def test_the_same_binds_under_loopback_are_the_programs(tmp_path, py):
    r, seen = _spawn(tmp_path, py, "loopback")
    assert set(seen.values()) == {"bound"}, seen
    assert not [d for d in r.denied if d.get("operation") == "bind"], r.denied


def test_the_cli_says_why_a_server_cannot_listen(tmp_path, py):
    code = "import socket; s=socket.socket(); s.bind(('127.0.0.1', 8000))"
    proc = subprocess.run([SANDBOX, "exec", "--", py, "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "PermissionError" in proc.stderr
    hint = [ln for ln in proc.stderr.splitlines() if ln.startswith("sandbox: hint:")]
    assert any("127.0.0.1:8000" in ln and "the sandbox has no network" in ln
               and "--net loopback gives it its own loopback" in ln for ln in hint), proc.stderr


UNIX_BINDS = r"""
import socket, sys
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"\0c{i}")      # address length 5..7: never an INET one's (16, 28)
    s.close()
"""


def test_unix_binds_are_the_audits_not_the_networks(tmp_path, py):
    """Counted, not timed. Under "none" the filter sends the monitor a bind only with
    an INET address length; a file audit (strict's) sends every bind, to record the
    file a pathname socket makes (probe 1, F8). 300 abstract UNIX binds: each one
    notified under that audit, none recorded (no file) and none refused."""
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    checked, records = {}, {}
    for n in (0, 300):
        la = Launcher(capture_output=True)
        la.audit_db = str(tmp_path / "audit.sqlite")
        r = la.spawn([py, "-I", "-c", UNIX_BINDS, str(n)], policy=load_policy("strict"),
                     timeout=90)
        assert r.status == "ok", (r.status, r.reason, r.stderr[-2000:])
        checked[n] = r.to_dict()["audit"]["checked"]
        records[n] = [d for d in r.denied if d["syscall"] == "bind"]
    assert 300 <= checked[300] - checked[0] < 330, checked
    assert records == {0: [], 300: []}, records
