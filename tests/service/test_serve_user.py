"""sandbox serve --user NAME started as root: a delegated cgroup subtree, then the
server runs as NAME (never root again), and its runs get cgroup limits."""
from __future__ import annotations

import os
import pwd
import shutil
import ssl
import subprocess
import sys
import tempfile

import pytest

from service.server import Server

USER = "nobody"


def _status_ids(pid: int) -> dict[str, list[int]]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in rest.split()]
    return out


@pytest.fixture
def user_server():
    if os.geteuid() != 0:
        pytest.skip("--user is for a server started as root (this pass is unprivileged)")
    pw = pwd.getpwnam(USER)
    probe = subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                            "--clear-groups",
                            sys.executable, "-c", "import sandbox.service.app"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"{USER} cannot run this checkout's interpreter: {probe.stderr[-200:]}")
    base = tempfile.mkdtemp(prefix="sbx-serve-user-", dir="/var/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, "home")
    os.mkdir(home, 0o700)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    srv = Server(state=os.path.join(base, "state"), home=home, extra_args=["--user", USER])
    srv.command = lambda: [sys.executable, "-m", "sandbox", "serve", "--listen",  # type: ignore
                           f"127.0.0.1:{srv.port}", "--state", srv.state, "--user", USER]
    try:
        yield srv.start()
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)
        _remove_delegated()


def _remove_delegated() -> None:
    """The (empty) cgroups the server was given, below this process's own."""
    from sandbox.monitor.cgroup_probe import _join_under, _parse_mounts, _parse_own
    with open("/proc/self/mountinfo") as f:
        v1, v2 = _parse_mounts(f.read())
    with open("/proc/self/cgroup") as f:
        own1, own2 = _parse_own(f.read())
    bases = [_join_under(*v1[c], own1[c]) for c in v1 if c in own1]
    if v2 is not None and own2 is not None:
        bases.append(_join_under(*v2, own2))
    for base in {b for b in bases if b}:
        top = os.path.join(base, f"sandbox-serve-{USER}")
        for d, _subdirs, _files in sorted(os.walk(top), key=lambda x: -len(x[0])):
            try:
                os.rmdir(d)      # cgroupfs: an empty cgroup goes with its control files
            except OSError:
                pass


def test_serves_as_the_user_with_a_delegated_cgroup(user_server) -> None:
    pw = pwd.getpwnam(USER)
    ids = _status_ids(user_server.proc.pid)
    assert ids["Uid"] == [pw.pw_uid] * 4 and ids["Gid"] == [pw.pw_gid] * 4, ids
    assert 0 not in ids.get("Groups", [])
    st = os.stat(user_server.state)
    assert st.st_uid == pw.pw_uid and st.st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(user_server.state, "service.db")).st_uid == pw.pw_uid
    with user_server.client() as http:
        run = http.post("/v1/runs", params={"wait": 60}, json={
            "argv": ["sh", "-c", "id -u; cat /proc/self/status | grep CapEff"]}).json()
        assert run["status"] == "ok", run
        applied = run["result"]["limits_applied"]
        assert applied.get("memory", "").startswith("cgroup"), applied
        assert applied.get("processes", "").startswith("cgroup"), applied
    with open(f"/proc/{user_server.proc.pid}/cgroup") as f:
        assert f"sandbox-serve-{USER}" in f.read()


def test_root_without_user_or_allow_root_is_refused(tmp_path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root is refused")
    p = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--state",
                        str(tmp_path / "s"), "--listen", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--allow-root" in p.stderr and "--user" in p.stderr
    assert p.stderr.count("\n") == 1


def test_non_loopback_without_tls_is_refused(tmp_path) -> None:
    p = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--state",
                        str(tmp_path / "s"), "--listen", "0.0.0.0:1", "--allow-root"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--tls-cert" in p.stderr and "--insecure" in p.stderr


def test_tls(tmp_path) -> None:
    import httpx
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    srv = Server(state=str(tmp_path / "state"), home=str(tmp_path),
                 extra_args=["--tls-cert", cert, "--tls-key", key])
    srv._wait_healthy = lambda: _healthy_tls(srv, cert)   # type: ignore[method-assign]
    srv.start()
    try:
        url = f"https://127.0.0.1:{srv.port}"
        r = httpx.post(url + "/v1/runs", params={"wait": 60}, json={"argv": ["true"]},
                       headers=srv.auth(), verify=ssl.create_default_context(cafile=cert),
                       timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=5)
    finally:
        srv.stop()


def _healthy_tls(srv: Server, cert: str) -> bool:
    import time
    import httpx
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if srv.proc is not None and srv.proc.poll() is not None:
            return False
        try:
            ctx = ssl.create_default_context(cafile=cert)
            if httpx.get(f"https://127.0.0.1:{srv.port}/healthz", verify=ctx,
                         timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False
