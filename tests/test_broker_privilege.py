"""Issue 10, finding 2: what acts for the sandbox has no more privilege than the sandbox.

Under a policy with a deny glob inside a writable tree, every open and name
change is performed for the sandbox by the broker. It used to be the monitor
itself: a root caller's sandbox read /proc/kmsg and real /proc/kallsyms
addresses and made world-writable device nodes in its output. Judged from the
host: the output directory, the broker process's /proc, and what the same
program reads when the kernel layers alone answer it.
"""
from __future__ import annotations

import os
import stat
import sys
import threading
import time
import uuid
from dataclasses import replace

import pytest

pytestmark = pytest.mark.isolation

ATTACK = r"""
import os, stat, sys, time
out, token = sys.argv[1], sys.argv[2]
res = {}
def t(k, f):
    try:
        res[k] = f()
    except OSError as e:
        res[k] = "errno:%d" % e.errno
t("chr", lambda: os.mknod(out + "/kvm", 0o666 | stat.S_IFCHR, os.makedev(10, 232)))
t("kmsg_node", lambda: os.mknod(out + "/kmsg", 0o666 | stat.S_IFCHR, os.makedev(1, 11)))
t("blk", lambda: os.mknod(out + "/sda", 0o666 | stat.S_IFBLK, os.makedev(8, 0)))
t("blk_at", lambda: os.mknod("sdb", 0o666 | stat.S_IFBLK, os.makedev(8, 16),
                             dir_fd=os.open(out, os.O_PATH)))
t("kmsg", lambda: open("/proc/kmsg", "rb").read(1))
t("kallsyms", lambda: [l.split()[0] for l in open("/proc/kallsyms").readlines()[:50]])
t("kvm", lambda: os.close(os.open("/dev/kvm", os.O_RDWR)))
t("fifo", lambda: os.mkfifo(out + "/fifo"))
t("file", lambda: open(out + "/ok.txt", "w").write("x"))
t("pem", lambda: open(out + "/key.pem", "w").write("x"))
if token:
    open(out + "/started", "w").close()
    deadline = time.time() + 30
    while not os.path.exists(out + "/seen") and time.time() < deadline:
        time.sleep(0.02)
print(repr(res))
"""


def _policy(out: str, guarded: bool):
    from sandbox.policy import load_policy
    pol = load_policy("default")
    # a writable host tree (the run's ${OUTPUT} is a private tmpfs, copied out inert)
    pol = pol.replace(filesystem=replace(pol.filesystem, write=(*pol.filesystem.write, out)))
    if guarded:
        pol = pol.replace(filesystem=replace(pol.filesystem,
                                             deny=pol.filesystem.deny + (f"{out}/*.pem",)))
    return pol


def _run(tmp_path, py, name: str, guarded: bool, token: str = "", during=None):
    from sandbox.launcher.launcher import Launcher
    out = tmp_path / name
    out.mkdir()
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / f"{name}.sqlite")
    th = None
    if during is not None:
        th = threading.Thread(target=during, args=(out,), daemon=True)
        th.start()
    r = la.spawn([py, "-I", "-c", ATTACK, str(out), token], policy=_policy(str(out), guarded),
                 output_dir=str(tmp_path / f"{name}-output"), timeout=90)
    if th is not None:
        th.join(30)
    assert r.status == "ok", (r.status, r.reason, r.stderr[-2000:])
    return r, out, eval(r.stdout)


def test_no_device_node_and_nothing_privileged_through_the_broker(tmp_path, py):
    r, out, seen = _run(tmp_path, py, "guarded", guarded=True)
    assert r.audit["guarded"] and r.audit["brokered"] > 0      # the broker did serve this run
    # from the host: no device node of any kind was made in the output
    for entry in os.scandir(out):
        mode = entry.stat(follow_symlinks=False).st_mode
        assert not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)), f"device node {entry.path}"
    for name in ("kvm", "kmsg", "sda", "sdb", "key.pem"):
        assert not (out / name).exists(), name
    for k in ("chr", "kmsg_node", "blk", "blk_at"):
        assert seen[k] == "errno:1", (k, seen[k])              # EPERM, as the kernel says
    assert str(seen["kmsg"]).startswith("errno:"), seen["kmsg"]
    assert str(seen["kvm"]).startswith("errno:"), seen["kvm"]
    # what is allowed still works, done by the broker
    assert seen["fifo"] is None and stat.S_ISFIFO(os.lstat(out / "fifo").st_mode)
    assert (out / "ok.txt").read_text() == "x"
    assert seen["pem"] == "errno:13"
    # the same program answered by the kernel layers alone reads what the broker gave
    _, _, plain = _run(tmp_path, py, "plain", guarded=False)
    assert seen["kallsyms"] == plain["kallsyms"]
    assert set(seen["kallsyms"]) == {"0000000000000000"}, seen["kallsyms"][:3]
    assert seen["kmsg"] == plain["kmsg"]


def _status(pid: str) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _ns(pid: str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def test_the_broker_process_has_the_sandboxs_credentials_and_nothing_more(tmp_path, py):
    """Seen from the host while the sandbox runs: the process that serves it is in the
    sandbox's user, mount and network namespaces but not its PID namespace, has the
    sandbox's uid and gid, no capability in any set, and no_new_privs."""
    token = uuid.uuid4().hex
    found: dict[str, object] = {}

    def inspect(out) -> None:
        deadline = time.time() + 60
        while not (out / "started").exists() and time.time() < deadline:
            time.sleep(0.02)
        try:
            sandboxed = brokers = None
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if token.encode() in f.read().split(b"\0"):
                            sandboxed = pid
                except OSError:
                    continue
            assert sandboxed is not None
            me = _status(sandboxed)
            brokers = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    if pid != sandboxed and _ns(pid, "mnt") == _ns(sandboxed, "mnt") \
                            and _ns(pid, "pid") != _ns(sandboxed, "pid"):
                        brokers.append((pid, _status(pid), {k: _ns(pid, k) for k in
                                                             ("user", "mnt", "net")}))
                except OSError:
                    continue
            found["sandboxee"] = (me, {k: _ns(sandboxed, k) for k in ("user", "mnt", "net")})
            found["brokers"] = brokers
        except Exception as exc:   # reported by the assertions below
            found["error"] = repr(exc)
        finally:
            (out / "seen").touch()

    r, out, seen = _run(tmp_path, py, "creds", guarded=True, token=token, during=inspect)
    assert "error" not in found, found.get("error")
    me, my_ns = found["sandboxee"]
    pid = str(r.audit["broker_pid"])
    brokers = [b for b in found["brokers"] if b[0] == pid]
    assert len(brokers) == 1, (pid, [p for p, _, _ in found["brokers"]])
    _, st, ns = brokers[0]
    assert ns == my_ns                                   # the sandbox's user, mount, net
    assert st["Uid"] == me["Uid"] and st["Gid"] == me["Gid"]
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(st[cap], 16) == 0, (cap, st[cap])
    assert st["NoNewPrivs"] == "1"
    assert seen["chr"] == "errno:1"
