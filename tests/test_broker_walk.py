"""The audit broker resolves paths like the kernel (sandbox/monitor/root_walk.py, broker_exec.py).

Without a sandbox: a tree stands for the sandbox's root, and the kernel's own
answer for the same path is `openat2(root, path, RESOLVE_IN_ROOT)` (absolute
links and `..` kept inside the root, exactly as a chrooted caller sees them)
or, for name changes, the call made relative to the tree. The broker must
give the same errno and act on the same object, for every case. Then, with a
sandbox: the differential corpus (tests/test_differential.py) run under the
kernel layers alone and under the broker gives the same result *and errno*
for every one of its cases.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from typing import Any

import pytest

from sandbox.monitor import audit_syscalls as S
from sandbox.monitor.broker_exec import Denied, Executor, Request
from sandbox.monitor.root_walk import MAX_LINKS, Root, openat2

RESOLVE_IN_ROOT = 0x10


def make_tree(root: str) -> None:
    for d in ("a/sub/deep", "ro", "rw"):
        os.makedirs(f"{root}/{d}")
    for f in ("a/f", "a/sub/g", "ro/x", "rw/w"):
        with open(f"{root}/{f}", "w") as fh:
            fh.write(f)
    links = {"b": "a", "abs": "/a", "dang": "nowhere/x", "dang_ok": "a/new_by_link",
             "loop1": "loop2", "loop2": "loop1", "a/up": "..", "a/file_link": "f",
             "a/dir_link": "sub", "escape": "../../../../a", "a/sub/deep/back": "../../../b",
             "ro/to_rw": "../rw/w", "rw/to_ro": "/ro/x", "rw/dir_to_ro": "../ro",
             f"c{MAX_LINKS + 1}": "a/f"}
    for i in range(MAX_LINKS + 1):        # c0 -> c1 -> ... -> c41 -> a/f: 42 links from c0
        links[f"c{i}"] = f"c{i + 1}"
    for rel, target in links.items():
        os.symlink(target, f"{root}/{rel}")


class _Verdict:
    def __init__(self, allowed: bool, rule: str) -> None:
        self.allowed, self.rule = allowed, rule


class _Engine:
    """Everything allowed, except writes, creates and deletes under /ro."""

    def decide(self, op: str, path: str) -> _Verdict:
        if op in ("write", "create", "delete") and (path == "/ro" or path.startswith("/ro/")):
            return _Verdict(False, "filesystem.read: /ro")
        return _Verdict(True, "test: allowed")


def broker_for(root: str) -> Executor:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return Executor(_Engine(), Root(fd))


REQ = Request("open", "open", 0, 0, ("/",), tgid=os.getpid(), tid=os.getpid())


def _what(fd: int, root: str) -> str:
    """The object a descriptor names, relative to the tree."""
    return os.readlink(f"/proc/self/fd/{fd}").removeprefix(os.path.realpath(root))


def kernel_open(root: str, path: str, flags: int, mode: int) -> tuple[str | None, str]:
    rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = openat2(rfd, path, flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                     RESOLVE_IN_ROOT)
    except OSError as exc:
        return errno.errorcode[exc.errno], ""
    finally:
        os.close(rfd)
    try:
        return None, _what(fd, root)
    finally:
        os.close(fd)


def broker_open(root: str, path: str, flags: int, mode: int) -> tuple[str | None, str]:
    b = broker_for(root)
    try:
        fd, _ = b.open_path(REQ, path, S.open_operation(flags), flags, mode)
    except Denied as d:
        return errno.errorcode[d.err], "refused by the engine"
    except OSError as exc:
        return errno.errorcode[exc.errno], ""
    finally:
        b.root.close()
    try:
        return None, _what(fd, root)
    finally:
        os.close(fd)


R, W, D = os.O_RDONLY, os.O_WRONLY | os.O_APPEND, os.O_RDONLY | os.O_DIRECTORY
NF, P = os.O_NOFOLLOW, os.O_PATH
OPENS = [
    ("/a/f", R), ("/b/f", R), ("/abs/f", R), ("/b/../a/f", R), ("/abs/sub/../f", R),
    ("/a/dir_link/../f", R), ("/a/up/a/f", R), ("/a/sub/deep/back/f", R),
    ("/a/sub/deep/back/../a/sub/g", R), ("/escape/f", R), ("/escape/../a/f", R),
    ("/../../a/f", R), ("/./a/./f", R), ("//a//f", R), ("/a/sub/..", D), ("/a/.", D), ("/", D),
    ("/..", D), ("/b", D), ("/b/", R), ("/a/dir_link/", D), ("/dang/../a/f", R),
    ("/dang/../../a/f", R), ("/dang", R), ("/nowhere/../a/f", R), ("/a/f/x", R), ("/a/f/", R),
    ("/a/f/..", R), ("/a/file_link/", R), ("/a/file_link", R), ("/a/file_link", R | NF),
    ("/a/file_link", P), ("/a/file_link", P | NF), ("/b", R | NF), ("/b", D | NF),
    ("/b/", D | NF), ("/b", D), ("/a/f", D), ("/loop1", R), ("/loop1/x", R), ("/loop1", R | NF),
    ("/c0", R), ("/c1", R), ("/c2", R), ("/a/missing", R), ("/missing/x", R),
    ("/a/sub", os.O_WRONLY), ("/rw/w", W), ("/rw/dir_to_ro/x", R), ("/rw/to_ro", R),
]
CREATES = [
    ("/a/new", os.O_WRONLY | os.O_CREAT), ("/b/new", os.O_WRONLY | os.O_CREAT),
    ("/dang_ok", os.O_WRONLY | os.O_CREAT), ("/dang", os.O_WRONLY | os.O_CREAT),
    ("/dang_ok", os.O_WRONLY | os.O_CREAT | os.O_EXCL), ("/a/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL),
    ("/a/file_link", os.O_WRONLY | os.O_CREAT), ("/a/new/", os.O_WRONLY | os.O_CREAT),
    ("/a/sub", os.O_WRONLY | os.O_CREAT), ("/a/.", os.O_WRONLY | os.O_CREAT),
    ("/dang_ok", os.O_WRONLY | os.O_CREAT | NF), ("/missing/new", os.O_WRONLY | os.O_CREAT),
]


@pytest.mark.parametrize("path,flags", OPENS + CREATES,
                         ids=[f"{p}:{oct(f)}" for p, f in OPENS + CREATES])
def test_open_reaches_what_the_kernel_reaches(tmp_path, path, flags):
    got = []
    for opener in (kernel_open, broker_open):
        root = str(tmp_path / opener.__name__)
        make_tree(root)
        got.append((opener(root, path, flags, 0o644), snapshot(root)))
    (kerr, kobj), ksnap = got[0]
    (berr, bobj), bsnap = got[1]
    assert (berr, bobj) == (kerr, kobj), f"kernel {kerr} {kobj!r}, broker {berr} {bobj!r}"
    assert bsnap == ksnap


def test_writes_are_decided_on_the_link_target_not_the_link():
    root = tempfile.mkdtemp()
    try:
        make_tree(root)
        # a link in a read-only tree to a writable file: allowed, the target is opened
        assert broker_open(root, "/ro/to_rw", W, 0) == (None, "/rw/w")
        # a link in a writable tree to a read-only file: refused, decided on the target
        b = broker_for(root)
        with pytest.raises(Denied) as ei:
            b.open_path(REQ, "/rw/to_ro", "write", W, 0)
        assert (ei.value.err, ei.value.path, ei.value.rule) == (
            errno.EACCES, "/ro/x", "filesystem.read: /ro")
        # refusals carry the kernel's errno where it fails first: no such file
        with pytest.raises(Denied) as ei:
            b.open_path(REQ, "/ro/missing", "write", W, 0)
        assert ei.value.err == errno.ENOENT
        with pytest.raises(Denied) as ei:
            b.open_path(REQ, "/ro/x", "create", os.O_WRONLY | os.O_CREAT
                              | os.O_EXCL, 0o644)
        assert ei.value.err == errno.EEXIST
        os.mkdir(f"{root}/ro/d")
        with pytest.raises(Denied) as ei:
            b.open_path(REQ, "/ro/d", "write", os.O_WRONLY, 0)
        assert ei.value.err == errno.EISDIR
        b.root.close()
    finally:
        shutil.rmtree(root)


def test_o_creat_on_an_existing_file_is_decided_as_the_open_it_is(tmp_path):
    """The kernel creates nothing when O_CREAT names an existing file: it opens it as it
    is. Before, the broker decided such an open as a create, so in a guarded tree
    `sh`'s `2>/dev/null` failed ("create of /dev/null was refused"), and with it the
    command it redirected."""
    root = str(tmp_path)
    make_tree(root)
    creat = os.O_CREAT
    assert broker_open(root, "/ro/x", os.O_RDONLY | creat, 0o644) == (None, "/ro/x")
    assert kernel_open(root, "/ro/x", os.O_RDONLY | creat, 0o644) == (None, "/ro/x")
    # a write is still decided as a write, a new name as a create, O_EXCL as the kernel
    assert broker_open(root, "/ro/x", os.O_WRONLY | os.O_APPEND | creat, 0o644)[0] == "EACCES"
    assert broker_open(root, "/ro/new", os.O_WRONLY | creat, 0o644)[0] == "EACCES"
    assert broker_open(root, "/ro/x", os.O_WRONLY | creat | os.O_EXCL, 0o644)[0] == "EEXIST"
    assert not os.path.exists(f"{root}/ro/new")
    # through a link, decided on what it names (a new file there: a create)
    assert broker_open(root, "/ro/to_rw", os.O_WRONLY | creat, 0o644) == (None, "/rw/w")
    assert broker_open(root, "/dang_ok", os.O_WRONLY | creat, 0o644) == (None, "/a/new_by_link")


def test_a_link_replaced_by_the_sandbox_is_followed_anew(tmp_path):
    """Nothing about a walk is remembered across a name change: the kernel walks again."""
    root = str(tmp_path / "t")
    make_tree(root)
    b = broker_for(root)
    try:
        for _ in range(2):
            fd, recs = b.open_path(REQ, "/b/f", "read", R, 0)
            os.close(fd)
            assert recs == [("read", "/a/f", True, "test: allowed")]
        b.change(Request("unlink", "path", 0, 0, ("/b",)))
        b.change(Request("symlink", "symlink", 0, 0, ("/b",), link_text="a/sub"))
        fd, recs = b.open_path(REQ, "/b/g", "read", R, 0)
        os.close(fd)
        assert recs == [("read", "/a/sub/g", True, "test: allowed")]
    finally:
        b.root.close()


TTY_PROBE = r"""
import errno, os, sys, types
sys.path.insert(0, sys.argv[1])
import test_broker_walk as T
b = T.broker_for("/")
own = os.open("/dev/tty", os.O_RDWR)      # this process does have a controlling terminal
os.close(own)
for path in ("/dev/tty", "/dev/../dev/tty"):
    try:
        fd, _ = b.open_path(T.REQ, path, "write", os.O_RDWR, 0)
        print("opened", os.ttyname(fd))
    except OSError as exc:
        print(errno.errorcode[exc.errno])
"""


def test_dev_tty_is_never_the_monitors_terminal():
    """/dev/tty names the *opener's* controlling terminal. Opened by a monitor started
    from a terminal it would be the user's, handed to a caller that setsid() cut off
    from it; the broker answers ENXIO, as the kernel does to a caller without one."""
    import fcntl
    import subprocess
    import termios
    master, slave = os.openpty()

    def ctty() -> None:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    p = subprocess.run([sys.executable, "-c", TTY_PROBE, os.path.dirname(__file__)],
                       preexec_fn=ctty, capture_output=True, text=True, timeout=60)
    os.close(master)
    os.close(slave)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["ENXIO", "ENXIO"]


# -- name changes --------------------------------------------------------------------------

def snapshot(root: str) -> list[tuple[str, str, str, int]]:
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) \
                else "file"
            out.append((os.path.relpath(p, root), kind,
                        os.readlink(p) if kind == "link" else "", st.st_nlink if kind == "file" else 0))
    return sorted(out)


def _kernel_call(root: str, name: str, paths: list[str], flags: int) -> str | None:
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    rel = [p.lstrip("/") or "." for p in paths]
    try:
        if name == "unlink":
            os.unlink(rel[0], dir_fd=fd)
        elif name == "rmdir":
            os.rmdir(rel[0], dir_fd=fd)
        elif name == "mkdir":
            os.mkdir(rel[0], 0o755, dir_fd=fd)
        elif name == "symlink":
            os.symlink("t", rel[0], dir_fd=fd)
        elif name == "rename":
            os.rename(rel[0], rel[1], src_dir_fd=fd, dst_dir_fd=fd)
        elif name == "linkat":
            os.link(rel[0], rel[1], src_dir_fd=fd, dst_dir_fd=fd,
                    follow_symlinks=bool(flags & S.AT_SYMLINK_FOLLOW))
        return None
    except OSError as exc:
        return errno.errorcode[exc.errno]
    finally:
        os.close(fd)


def _broker_call(root: str, name: str, paths: list[str], flags: int) -> str | None:
    b = broker_for(root)
    req = Request(name, S.SPECS[name].kind, flags, 0o755 if name == "mkdir" else 0,
                  tuple(paths), link_text="t" if name == "symlink" else "", umask=0o022)
    try:
        b.change(req)
        return None
    except Denied as d:
        return errno.errorcode[d.err] + " (engine)"
    except OSError as exc:
        return errno.errorcode[exc.errno]
    finally:
        b.root.close()


CHANGES = [
    ("unlink", ["/b/f"], 0), ("unlink", ["/a/file_link"], 0), ("unlink", ["/dang"], 0),
    ("unlink", ["/dang/../a/f"], 0), ("unlink", ["/a/sub"], 0), ("unlink", ["/a/f/"], 0),
    ("unlink", ["/a/sub/"], 0), ("unlink", ["/a/."], 0), ("unlink", ["/a/missing"], 0),
    ("unlink", ["/a/dir_link/../f"], 0), ("rmdir", ["/a/sub/deep/."], 0),
    ("rmdir", ["/a/sub/deep/.."], 0), ("rmdir", ["/b/sub/deep/"], 0), ("rmdir", ["/b"], 0),
    ("mkdir", ["/b/newdir/"], 0), ("mkdir", ["/a/."], 0), ("mkdir", ["/dang"], 0),
    ("mkdir", ["/dang/../x"], 0), ("symlink", ["/a/new/"], 0), ("symlink", ["/a/f/"], 0),
    ("symlink", ["/a/dir_link/../n"], 0), ("rename", ["/b/f", "/a/g"], 0),
    ("rename", ["/a/file_link", "/a/moved_link"], 0), ("rename", ["/a/.", "/x"], 0),
    ("rename", ["/a/f", "/nowhere/x"], 0), ("linkat", ["/b/f", "/a/hl"], 0),
    ("linkat", ["/a/file_link", "/a/hl"], 0), ("linkat", ["/a/file_link", "/a/hl"],
                                               S.AT_SYMLINK_FOLLOW),
    ("linkat", ["/dang", "/a/hl"], S.AT_SYMLINK_FOLLOW), ("linkat", ["/a/sub", "/a/hl"], 0),
    ("linkat", ["/a/f", "/a/file_link"], 0),
]


@pytest.mark.parametrize("name,paths,flags", CHANGES,
                         ids=[f"{n}:{','.join(p)}:{f}" for n, p, f in CHANGES])
def test_name_changes_act_where_the_kernel_acts(tmp_path, name, paths, flags):
    kroot, broot = str(tmp_path / "k"), str(tmp_path / "b")
    make_tree(kroot)
    make_tree(broot)
    kerr = _kernel_call(kroot, name, paths, flags)
    berr = _broker_call(broot, name, paths, flags)
    assert berr == kerr
    assert snapshot(broot) == snapshot(kroot)


LINK_TO_DENIED = r"""
import os, sys, time
out = sys.argv[1]
seen = {}
for i, d in enumerate(("/dev/shm", "/tmp", out)):
    os.symlink(f"{out}/k.pem", f"{d}/l{i}")
open(f"{out}/started", "w").close()
while not os.path.exists(f"{out}/ready"):
    time.sleep(0.01)
for i, d in enumerate(("/dev/shm", "/tmp", out)):
    try:
        seen[d] = open(f"{d}/l{i}").read()
    except OSError as e:
        seen[d] = e.errno
try:
    seen["dotdot"] = open(f"/dev/shm/../..{out}/k.pem").read()
except OSError as e:
    seen["dotdot"] = e.errno
print(seen)
"""


@pytest.mark.isolation
def test_links_from_the_private_areas_into_a_guarded_tree_are_decided_on_their_target(
        tmp_path, py):
    """A link made in /dev/shm, /tmp or a writable host tree to a denied name that
    appears later: the broker follows it itself and refuses the target (the kernel
    layers could not: the file did not exist when the view was built)."""
    from sandbox.launcher.launcher import Launcher
    from sandbox.policy import load_policy
    from dataclasses import replace
    out = tmp_path / "shared"   # a writable host tree (${OUTPUT} is a private tmpfs)
    out.mkdir()
    pol = load_policy("default")
    pol = pol.replace(filesystem=replace(pol.filesystem, deny=pol.filesystem.deny
                                         + (f"{out}/*.pem",),
                                         write=pol.filesystem.write + (str(out),)))

    def plant() -> None:
        deadline = time.time() + 60
        while not (out / "started").exists():
            if time.time() > deadline:
                return
            time.sleep(0.01)
        (out / "k.pem").write_text("SECRET")
        (out / "ready").touch()
    th = threading.Thread(target=plant)
    th.start()
    la = Launcher(capture_output=True)
    la.audit_db = str(tmp_path / "audit")
    r = la.spawn([py, "-I", "-c", LINK_TO_DENIED, str(out)], policy=pol, output_dir=str(tmp_path / "out"),
                 timeout=60)
    th.join()
    assert r.status == "ok", (r.reason, r.stderr)
    seen = eval(r.stdout)
    assert seen == {"/dev/shm": errno.EACCES, "/tmp": errno.EACCES, str(out): errno.EACCES,
                    "dotdot": errno.EACCES}, seen
    assert r.audit["brokered"] > 0
    denied = [d for d in r.denied if d["path"] == f"{out}/k.pem"]
    assert len(denied) == 4 and all(d["rule"] == f"filesystem.deny: {out}/*.pem" for d in denied)


# -- in a sandbox: the whole differential corpus, errno for errno -----------------------------

@pytest.mark.isolation
def test_broker_and_kernel_give_the_same_result_and_errno_on_the_corpus(tmp_path_factory):
    import test_differential as T
    results = {}
    mp = pytest.MonkeyPatch()
    try:
        for audit in ("none", "denied"):
            base = tempfile.mkdtemp(prefix="sbx-walk-", dir="/var/tmp")
            tmp = str(tmp_path_factory.mktemp(f"walk-{audit}"))
            try:
                world = T.build_world(base, tmp, audit)
                mp.setenv("HOME", world.home)
                mp.setenv("SANDBOX_HOME", f"{tmp}/state")
                out = T.run_probe(world, world.cases)
                results[audit] = [(c.op, c.path.replace(base, "B").replace(tmp, "T"),
                                   r["ok"], r.get("errno"))
                                  for c, r in zip(world.cases, out["results"])]
            finally:
                shutil.rmtree(base, ignore_errors=True)
    finally:
        mp.undo()
    kernel, broker = results["none"], results["denied"]
    assert len(kernel) == len(broker) >= 300
    diff = [f"{k[0]} {k[1]}: kernel {k[2:]}, broker {b[2:]}" for k, b in zip(kernel, broker)
            if k != b]
    assert not diff, f"{len(diff)} cases differ:\n" + "\n".join(diff)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
