"""The Landlock layer, checked from inside a real sandboxee.

To test Landlock's own semantics, the mount view is built from a *wider* plan
than the one Landlock enforces: the sandboxee runs the sequence up to the
privileges layer, then calls `landlock.apply` itself with the narrower plan,
so a denial can only come from Landlock (EACCES, where the view would say
EROFS or ENOENT). Works as root and as an unprivileged user.
"""
from __future__ import annotations

import errno
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid

import pytest

from layer_harness import run_layers
from sandbox.errors import SetupError
from sandbox.isolation import landlock
from sandbox.isolation.context import ContainContext, RunPaths
from sandbox.policy.model import NetworkPolicy, Policy
from sandbox.policy.plan import FsPlan, FsRule

ABI = landlock.abi_version()
needs_landlock = pytest.mark.skipif(ABI < 1, reason="kernel has no Landlock: "
                                    "test_missing_landlock_is_reported covers it")
SYSTEM = (FsRule("/usr", exec=True), FsRule("/lib", exec=True), FsRule("/lib64", exec=True))


def err(call) -> str:
    try:
        call()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"


def under_landlock(tmp_path, check, view_rules, ll_rules, *, network: str = "none",
                   before=None):
    """Build the view from `view_rules`, apply Landlock with only `ll_rules`, run `check`."""
    policy = Policy(network=NetworkPolicy(mode=network))
    base = str(tmp_path)

    def fn():
        state = before() if before else None
        ctx = ContainContext(policy=policy, paths=RunPaths(base, base + "/work", base + "/output",
                                                           base + "/tmp"),
                             fs_plan=FsPlan(rules=tuple(ll_rules)), ipc_fd=-1, monitor_fd=-1,
                             active=["mounts"])
        landlock.apply(ctx)
        return {"active": ctx.active, "out": check(state) if before else check()}
    r = run_layers(policy, fn, base=base, until="privileges", fs_plan=FsPlan(rules=tuple(view_rules)))
    assert r["ok"], r.get("traceback") or r["error"]
    assert r["value"]["active"] == ["mounts", f"landlock:abi{ABI}"]
    return r["value"]["out"]


@pytest.fixture
def tree():
    """Test files outside /tmp: Landlock grants the private /tmp, and a grant covers
    everything bound beneath it in the view (see test_binds_under_tmp_rely_on_the_mount_flags)."""
    top = pathlib.Path(tempfile.mkdtemp(dir="/var/tmp", prefix="sbx-landlock-"))
    for d in ("data", "other"):
        (top / d).mkdir()
        (top / d / "f").write_text(d)
    yield top
    shutil.rmtree(top)


# --- pure parts --------------------------------------------------------------------------

def test_handled_rights_follow_the_abi():
    fs3, net3, sc3 = landlock.handled(3, "none")
    assert fs3 & landlock.TRUNCATE and not fs3 & landlock.IOCTL_DEV and net3 == sc3 == 0
    fs4, net4, _ = landlock.handled(4, "none")
    assert net4 == landlock.NET_BIND_TCP | landlock.NET_CONNECT_TCP
    assert landlock.handled(4, "loopback")[1] == 0 and landlock.handled(4, "host")[1] == 0
    fs7, _, sc7 = landlock.handled(7, "none")
    assert fs7 & landlock.IOCTL_DEV and fs7 & landlock.REFER
    assert sc7 == landlock.SCOPE_ABSTRACT_UNIX_SOCKET | landlock.SCOPE_SIGNAL
    assert landlock.handled(0, "none") == (0, 0, 0)


def test_rights_for_rule_kinds():
    assert landlock.rights_for(True, False, False) == landlock.READ
    assert landlock.rights_for(True, False, True) == landlock.READ | landlock.EXECUTE
    w = landlock.rights_for(True, True, False)
    assert w & landlock.MAKE_REG and w & landlock.REMOVE_FILE and not w & landlock.EXECUTE


def test_without_the_view_fixed_rules_use_host_paths(tmp_path):
    paths = RunPaths(str(tmp_path), str(tmp_path / "w"), str(tmp_path / "o"), str(tmp_path / "t"))
    ctx = ContainContext(policy=Policy(), paths=paths, fs_plan=FsPlan(), ipc_fd=-1, monitor_fd=-1)
    rules = {r.path: r.rights for r in landlock.plan_rules(ctx)}
    assert rules[str(tmp_path / "t")] & landlock.MAKE_REG
    assert "/tmp" not in rules and "/dev" not in rules and rules["/dev/null"] & landlock.WRITE_FILE
    ctx.active.append("mounts")
    rules = {r.path: r.rights for r in landlock.plan_rules(ctx)}
    assert rules["/tmp"] & landlock.MAKE_REG and rules["/proc"] == landlock.READ


def test_missing_landlock_is_reported(tmp_path, monkeypatch):
    """The honest report when the kernel has none (simulated here: this kernel has it)."""
    monkeypatch.setattr(landlock, "abi_version", lambda: 0)
    ctx = ContainContext(policy=Policy(), paths=RunPaths(*(str(tmp_path),) * 4), fs_plan=FsPlan(),
                         ipc_fd=-1, monitor_fd=-1)
    with pytest.raises(SetupError, match="kernel has no Landlock"):
        landlock.apply(ctx)


def test_this_kernel_reports_its_abi():
    assert ABI >= 1, "this machine is documented to have Landlock (ABI 7)"


# --- in a sandboxee ----------------------------------------------------------------------

@pytest.mark.isolation
@needs_landlock
def test_full_sequence_records_the_abi(tmp_path):
    r = run_layers(Policy(), lambda: open("/proc/self/status").read(40), base=str(tmp_path),
                   until="landlock", fs_plan=FsPlan())
    assert r["ok"], r.get("error")
    assert r["active"][-1] == f"landlock:abi{ABI}" and "mounts" in r["active"]


@pytest.mark.isolation
@needs_landlock
def test_read_allowed_write_denied(tree):
    data, other = str(tree / "data"), str(tree / "other")

    def check():
        return {"read": open(data + "/f").read(), "write": err(lambda: open(data + "/f", "a")),
                "create": err(lambda: open(data + "/new", "w")),
                "other": err(lambda: open(other + "/f")),
                "tmp": err(lambda: open("/tmp/t", "w").write("x")),
                "null": err(lambda: open("/dev/null", "w").write("x")),
                "proc": err(lambda: open("/proc/self/status").read())}
    out = under_landlock(tree, check, [FsRule(data, write=True), FsRule(other, write=True)],
                         [FsRule(data)])
    assert out["read"] == "data"
    assert out["write"] == out["create"] == out["other"] == "EACCES"   # the view would allow them
    assert out["tmp"] == out["null"] == out["proc"] == "ok"


@pytest.mark.isolation
@needs_landlock
def test_write_rule_allows_create_and_delete(tree):
    data = str(tree / "data")

    def check():
        with open(data + "/new", "w") as f:
            f.write("x")
        os.mkdir(data + "/d")
        os.rmdir(data + "/d")
        os.unlink(data + "/f")
        return sorted(os.listdir(data))
    assert under_landlock(tree, check, [FsRule(data, write=True)],
                          [FsRule(data, write=True)]) == ["new"]


@pytest.mark.isolation
@needs_landlock
def test_file_rule_grants_only_that_file(tree):
    (tree / "data" / "g").write_text("g")
    data = str(tree / "data")

    def check():
        return {"f": open(data + "/f").read(), "g": err(lambda: open(data + "/g")),
                "list": err(lambda: os.listdir(data))}
    out = under_landlock(tree, check, [FsRule(data)], [FsRule(data + "/f", exec=True)])
    # Listing is granted on every directory of the view (issue 13, `ls /`): it names what
    # the view holds (here the harness bound all of data), never reads a file
    assert out == {"f": "data", "g": "EACCES", "list": "ok"}


@pytest.mark.isolation
@needs_landlock
@pytest.mark.parametrize("exec_right", [False, True])
def test_exec_needs_the_exec_right(tree, exec_right):
    def check():
        try:
            return subprocess.run(["/usr/bin/true"]).returncode
        except PermissionError:
            return "EACCES"
    ll = [FsRule(r.path, exec=exec_right) for r in SYSTEM]
    assert under_landlock(tree, check, SYSTEM, ll) == (0 if exec_right else "EACCES")


@pytest.mark.isolation
@needs_landlock
@pytest.mark.parametrize("mode", ["none", "loopback"])
def test_tcp_denied_for_network_none(tree, mode):
    def check():
        with socket.socket() as s:
            return {"connect": err(lambda: s.connect(("127.0.0.1", 9))),
                    "bind": err(lambda: socket.socket().bind(("127.0.0.1", 0)))}
    out = under_landlock(tree, check, [], [], network=mode)
    if mode == "none":
        assert out == {"connect": "EACCES", "bind": "EACCES"}
    else:   # loopback: not handled, lo is up, nothing listens
        assert out == {"connect": "ECONNREFUSED", "bind": "ok"}


@pytest.mark.isolation
@needs_landlock
@pytest.mark.skipif(ABI < 6, reason="scopes need Landlock ABI 6")
@pytest.mark.parametrize("landlocked", [False, True])
def test_abstract_unix_socket_outside_the_domain(tree, landlocked):
    name = f"\0sbx-test-{uuid.uuid4().hex}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(name)
    srv.listen(1)

    def check():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            return err(lambda: c.connect(name))
    try:
        # network host: no new network namespace, so the abstract namespace is shared
        if landlocked:
            out = under_landlock(tree, check, [], [], network="host")
        else:
            r = run_layers(Policy(network=NetworkPolicy(mode="host")), check, base=str(tree),
                           until="privileges")
            out = r["value"]
    finally:
        srv.close()
    assert out == ("EPERM" if landlocked else "ok")


@pytest.mark.isolation
@needs_landlock
@pytest.mark.skipif(ABI < 6, reason="scopes need Landlock ABI 6")
def test_signals_cannot_leave_the_domain(tree):
    def before():
        pid = os.fork()
        if pid == 0:   # outside the domain: forked before Landlock
            signal.pause()
            os._exit(0)
        return pid

    def check(outside):
        inside = os.fork()
        if inside == 0:   # same domain: forked after Landlock
            signal.pause()
            os._exit(0)
        res = {"outside": err(lambda: os.kill(outside, signal.SIGTERM)),
               "inside": err(lambda: os.kill(inside, signal.SIGTERM))}
        os.waitpid(inside, 0)
        return res
    out = under_landlock(tree, check, [], [], before=before)
    assert out == {"outside": "EPERM", "inside": "ok"}


@pytest.mark.isolation
@needs_landlock
def test_masks_and_landlock_together(tree):
    """Full sequence: the mask (mount layer) hides inside what Landlock allows."""
    (tree / "data" / "key").write_text("k")
    data = str(tree / "data")

    def fn():
        return {"key": err(lambda: open(data + "/key").read()), "f": open(data + "/f").read()}
    r = run_layers(Policy(), fn, base=str(tree), until="landlock",
                   fs_plan=FsPlan(rules=(FsRule(data),), masks=(data + "/key",)))
    assert r["ok"], r.get("error")
    assert r["value"] == {"key": "EACCES", "f": "data"}



@pytest.mark.isolation
@needs_landlock
def test_binds_under_tmp_rely_on_the_mount_flags(tmp_path):
    """Landlock rights are a union along the path: a bind beneath the private /tmp
    inherits /tmp's write right from Landlock, so its read-only-ness comes from
    the mount layer alone (EROFS, not EACCES). Exec stays denied by both."""
    (tmp_path / "ro").mkdir()
    ro = str(tmp_path / "ro")

    def fn():
        return {"write": err(lambda: open(ro + "/new", "w")),
                "flags": os.statvfs(ro).f_flag & os.ST_RDONLY}
    r = run_layers(Policy(), fn, base=str(tmp_path), until="landlock",
                   fs_plan=FsPlan(rules=(FsRule(ro),)))
    assert r["ok"], r.get("error")
    assert r["value"] == {"write": "EROFS", "flags": os.ST_RDONLY}


@pytest.mark.isolation
@needs_landlock
def test_without_namespaces_landlock_alone_guards_host_paths(tree):
    """best_effort without user namespaces: no view, Landlock on host paths."""
    data, other = str(tree / "data"), str(tree / "other")

    def fn():
        return {"data": open(data + "/f").read(), "other": err(lambda: open(other + "/f")),
                "tmp": err(lambda: open(str(tree / "tmp" / "x"), "w").close()),
                "host_tmp": err(lambda: open(f"/tmp/sbx-{uuid.uuid4().hex}", "w")),
                "null": err(lambda: open("/dev/null", "w").write("x"))}
    r = run_layers(Policy(best_effort=True), fn, base=str(tree), until="landlock",
                   use_namespaces=False, fs_plan=FsPlan(rules=(FsRule(data),)))
    assert r["ok"], r.get("error")
    assert r["active"][-1] == f"landlock:abi{ABI}" and "mounts" not in r["active"]
    assert r["value"] == {"data": "data", "other": "EACCES", "tmp": "ok", "host_tmp": "EACCES",
                          "null": "ok"}


def test_a_tree_granted_around_its_masks_grants_each_entry_but_them(tmp_path):
    """`around_masks` + `add_path_rules`, enforced on a forked process (no sandbox):
    every entry of the tree reads but the masks, down a subdirectory leading to a
    mask; a file made after the rules were added (as the host replacing a denied
    file makes a new inode) is refused; a link among the entries is not granted
    itself (its target is, by its own rule); a directory on the way that cannot be
    listed grants nothing beneath it and does not fail the layer."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "locked").mkdir()
    for rel in ("a", "secret", "sub/b", "sub/hidden", "locked/y", "locked/x"):
        (d / rel).write_text(rel + "\n")
    os.symlink("a", d / "link")
    os.chmod(d / "locked", 0)
    masks = tuple(str(d / m) for m in ("secret", "sub/hidden", "locked/x"))
    rules = landlock.around_masks([landlock.PathRule(str(d), landlock.READ)], masks,
                                  writable=False, resolve=False)
    assert [r.around for r in rules] == [tuple(sorted(masks))]
    ctx = ContainContext(policy=Policy(), paths=RunPaths(str(tmp_path), "", "", ""),
                         fs_plan=FsPlan(), ipc_fd=-1, monitor_fd=-1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            fs = landlock.READ_FILE | landlock.READ_DIR
            rs = landlock.create_ruleset(ABI, (fs, 0, 0))
            landlock.add_path_rules(ctx, rs, rules, fs, None)
            (d / "new").write_text("new\n")          # after the rules: a new inode
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.prctl(38, 1, 0, 0, 0) == 0     # PR_SET_NO_NEW_PRIVS
            landlock.libc.syscall("landlock_restrict_self", ctypes.c_int(rs),
                                  ctypes.c_uint32(0))
            got = []
            for rel in ("a", "sub/b", "secret", "sub/hidden", "new", "locked/y", "link"):
                try:
                    got.append(f"{rel}:{open(d / rel).read().strip()}")
                except OSError as exc:
                    got.append(f"{rel}:{errno.errorcode[exc.errno or 0]}")
            os.write(w, " ".join(got).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read().split()
    os.waitpid(pid, 0)
    os.chmod(d / "locked", 0o755)
    # as root the mode-0 directory can be listed, and its other entry is granted
    locked = "locked/y:locked/y" if os.getuid() == 0 else "locked/y:EACCES"
    assert out == ["a:a", "sub/b:sub/b", "secret:EACCES", "sub/hidden:EACCES", "new:EACCES",
                   locked, "link:a"], out
