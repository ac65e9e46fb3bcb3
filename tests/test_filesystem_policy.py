"""Issue 3, "done when": read on /usr, write on ${OUTPUT} only, and nothing else leaks.

One minimal policy (no `extends`): read /usr, exec what the sandboxed Python
needs to start (${PYTHON} and the loader directories), write ${OUTPUT}. One
sandboxed Python probe tries the forbidden things and reports errno names;
the host then checks that nothing it tried to write exists outside
${OUTPUT}, and that the host's /tmp and the sandbox's /tmp never meet.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid

import pytest

pytestmark = pytest.mark.isolation

POLICY = """\
name = "usr-read-output-write"
[filesystem]
read = ["/usr"]
exec = ["${PYTHON}", "/usr/bin", "/usr/lib", "/lib", "/lib64"]
write = ["${OUTPUT}"]
"""

PROBE = r"""
import errno, json, os, sys
spec = json.loads(sys.argv[1])
out = {}
def attempt(key, fn):
    try:
        fn()
        out[key] = "ok"
    except OSError as exc:
        out[key] = errno.errorcode.get(exc.errno, str(exc.errno))
def read(p):
    with open(p, "rb") as f:
        f.read(64)
def create(p):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, b"sandbox was here")
    os.close(fd)
def append(p):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"sandbox was here")
    os.close(fd)
for key, p in spec["read"].items():
    attempt("read " + key, lambda p=p: read(p))
for key, p in spec["create"].items():
    attempt("create " + key, lambda p=p: create(p))
for key, p in spec["append"].items():
    attempt("append " + key, lambda p=p: append(p))
attempt("host tmp file visible", lambda: os.stat(spec["host_tmp_file"]))
attempt("read /usr", lambda: read("/usr/lib/os-release"))
out["tmp listing"] = sorted(os.listdir("/tmp"))
print(json.dumps(out))
"""


def _writable_real_home() -> str | None:
    """The caller's real $HOME when it exists and is writable (root: /root); else None."""
    import pwd
    home = pwd.getpwuid(os.getuid()).pw_dir
    return home if os.path.isdir(home) and os.access(home, os.W_OK) else None


@pytest.fixture
def tree(tmp_path):
    """A fake home outside /tmp (under /tmp it would be the sandbox's private /tmp,
    hidden anyway), the output dir, a policy file; removed afterwards."""
    base = tempfile.mkdtemp(prefix="sbx-fspol-", dir="/var/tmp")
    planted_real = None
    try:
        home = os.path.join(base, "home")
        os.makedirs(os.path.join(home, ".ssh"))
        token = uuid.uuid4().hex
        for rel in ("notes.txt", ".ssh/id_ed25519"):
            with open(os.path.join(home, rel), "w") as f:
                f.write(f"secret {token}\n")
        real_home = _writable_real_home()
        if real_home is not None:
            planted_real = os.path.join(real_home, f".sbx-planted-{token}")
            with open(planted_real, "w") as f:
                f.write("planted\n")
        host_tmp_file = os.path.join("/tmp", f"sbx-host-only-{token}")
        with open(host_tmp_file, "w") as f:
            f.write("host\n")
        policy = tmp_path / "policy.toml"
        policy.write_text(POLICY)
        yield {"base": base, "home": home, "token": token, "planted_real": planted_real,
               "real_home": real_home, "host_tmp_file": host_tmp_file,
               "output": str(tmp_path / "out"), "workdir": str(tmp_path / "work"),
               "policy": str(policy), "tmp_path": str(tmp_path)}
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for p in (planted_real, f"/tmp/sbx-host-only-{token}"):
            if p and os.path.lexists(p):
                os.unlink(p)


def test_usr_read_output_write_policy_holds(tree, monkeypatch):
    from sandbox.launcher.launcher import Launcher
    monkeypatch.setenv("HOME", tree["home"])
    os.makedirs(tree["workdir"])
    t, tok = tree, tree["token"]
    sandbox_tmp_name = f"sbx-sandbox-only-{tok}"
    reads = {"/etc/shadow": "/etc/shadow", "home notes": f"{t['home']}/notes.txt",
             "home key": f"{t['home']}/.ssh/id_ed25519", "/etc/passwd": "/etc/passwd"}
    creates = {
        "output": f"{t['output']}/result-{tok}.txt",
        "sandbox tmp": f"/tmp/{sandbox_tmp_name}",
        "home": f"{t['home']}/dropped-{tok}",
        "workdir": f"{t['workdir']}/dropped-{tok}",
        "usr": f"/usr/dropped-{tok}",
        "etc": f"/etc/dropped-{tok}",
        "root dir": f"/dropped-{tok}",
        "var tmp": f"/var/tmp/dropped-{tok}",
        "base": f"{t['base']}/dropped-{tok}",
        # beside ${OUTPUT}, under the host's /tmp: inside the sandbox this is its private /tmp
        "output sibling": f"{t['tmp_path']}/dropped-{tok}",
    }
    appends = {"usr file": "/usr/lib/os-release", "home notes": f"{t['home']}/notes.txt"}
    if t["real_home"]:
        reads["real home"] = t["planted_real"]
        creates["real home"] = os.path.join(t["real_home"], f".sbx-dropped-{tok}")
    spec = {"read": reads, "create": creates, "append": appends,
            "host_tmp_file": t["host_tmp_file"]}
    before_usr = open("/usr/lib/os-release", "rb").read()

    r = Launcher(capture_output=True).spawn(
        [sys.executable, "-I", "-c", PROBE, json.dumps(spec)], policy=t["policy"],
        workdir=t["workdir"], output_dir=t["output"])
    assert r.status == "ok", (r.status, r.reason, r.stderr)
    assert "mounts" in r.layers and any(x.startswith("landlock") for x in r.layers)
    got = json.loads(r.stdout)

    # reads: /etc is not granted at all; the home is not granted
    for key in reads:
        if key == "/etc/passwd":
            assert got["read /etc/passwd"] == "ENOENT"     # /etc is not in the view
            continue
        assert got[f"read {key}"] in ("ENOENT", "EACCES"), (key, got[f"read {key}"])
    assert got["read /usr"] == "ok"

    # writes: only ${OUTPUT} and the sandbox's own /tmp
    assert got["create output"] == "ok"
    assert got["create sandbox tmp"] == "ok"
    for key, path in creates.items():
        if key in ("output", "sandbox tmp", "output sibling"):
            continue
        assert got[f"create {key}"] in ("ENOENT", "EACCES", "EROFS", "EPERM"), (key, got)
    for key in appends:
        assert got[f"append {key}"] in ("ENOENT", "EACCES", "EROFS"), (key, got)

    # on the host: the output file is there, nothing else was written
    with open(creates["output"]) as f:
        assert f.read() == "sandbox was here"
    for key, path in creates.items():
        if key != "output":
            assert not os.path.lexists(path), f"{key}: {path} appeared on the host"
    assert open("/usr/lib/os-release", "rb").read() == before_usr
    with open(f"{t['home']}/notes.txt") as f:
        assert f.read() == f"secret {tok}\n"

    # the host's /tmp and the sandbox's /tmp never meet
    assert got["host tmp file visible"] == "ENOENT"
    assert os.path.basename(t["host_tmp_file"]) not in got["tmp listing"]
    assert sandbox_tmp_name in got["tmp listing"]
    assert not os.path.exists(f"/tmp/{sandbox_tmp_name}")
    assert os.path.exists(t["host_tmp_file"])


def test_the_engine_agrees_with_what_the_probe_found(tree, monkeypatch):
    """The same policy, asked through `decide`: every path the probe could not touch is
    denied (or in the private /tmp), ${OUTPUT} is writable, /usr readable."""
    from sandbox.policy import decide, default_variables, load_policy, resolve
    monkeypatch.setenv("HOME", tree["home"])
    pol = resolve(load_policy(tree["policy"]), default_variables(tree["workdir"], tree["output"]))
    assert decide(pol, "read", "/usr/lib/os-release").allowed
    assert decide(pol, "create", f"{tree['output']}/x").allowed
    for path in ("/etc/shadow", f"{tree['home']}/notes.txt", "/etc/passwd"):
        assert not decide(pol, "read", path).allowed, path
    for path in ("/usr/x", "/etc/x", f"{tree['home']}/x", "/var/tmp/x", "/x"):
        assert not decide(pol, "create", path).allowed, path
    # the workdir (under the host's /tmp, not granted) is the sandbox's own /tmp there
    for path in ("/tmp/x", f"{tree['workdir']}/x"):
        assert decide(pol, "create", path).rule == "private /tmp"
