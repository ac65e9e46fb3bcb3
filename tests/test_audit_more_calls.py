"""Filesystem calls that name a path beyond open/stat/unlink... are audited too (probe 1, F8).

bind() of a pathname UNIX socket creates a file, setxattr/removexattr change one,
getxattr/listxattr/statfs/chdir/inotify_add_watch look one up; none was notified,
so under files = "all" a socket made in the output, an attribute set on it and a
refused getxattr of /etc/shadow left no record. Judged from the run's store and
from what the program got (the output is a tmpfs; sockets are not copied out).
"""
from __future__ import annotations

import os

import pytest

from test_audit_proc_paths import ATTEMPT, _policy, _tree, run_attempts
from test_audit_run import audit_launcher as launcher   # noqa: F401 (a fixture)

pytestmark = pytest.mark.isolation

PROG = ATTEMPT + r"""
import ctypes, socket
s = socket.socket(socket.AF_UNIX)
attempt("bind", lambda: s.bind(out + "/sock_audited") or 0)
attempt("abstract", lambda: socket.socket(socket.AF_UNIX).bind("\0abstract-name") or 0)
attempt("tcp", lambda: socket.socket().bind(("127.0.0.1", 0)) or 0)
attempt("setxattr", lambda: os.setxattr(out, "user.x", b"1") or 0)
attempt("lsetxattr", lambda: os.setxattr(out + "/sock_audited", "user.y", b"1",
                                         follow_symlinks=False) or 0)
attempt("getxattr", lambda: os.getxattr(out, "user.x").decode())
attempt("shadow", lambda: os.getxattr("/etc/shadow", "user.x"))
attempt("listxattr", lambda: os.listxattr(out))
attempt("removexattr", lambda: os.removexattr(out, "user.x") or 0)
attempt("statfs", lambda: os.statvfs(work + "/data.txt").f_bsize > 0)
attempt("chdir", lambda: os.chdir(work + "/a/b") or 0)
libc = ctypes.CDLL(None, use_errno=True)
ifd = libc.inotify_init1(0)
res["inotify"] = libc.inotify_add_watch(ifd, (work + "/a").encode(), 0x100) > 0
attempt("ro_xattr", lambda: os.setxattr(work + "/data.txt", "user.z", b"1") or 0)
print(json.dumps(res))
"""


def _find(recs, syscall, path):
    return [(x["operation"], x["verdict"]) for x in recs
            if x["syscall"] == syscall and x["path"] == path]


def test_bind_xattr_statfs_chdir_inotify_are_recorded(launcher, tmp_path, py):
    work, out, res, recs = run_attempts(launcher, tmp_path, py, PROG)
    assert res["bind"] == res["abstract"] == res["setxattr"] == 0, res
    assert res["tcp"] in (0, 13), res      # Landlock refuses a TCP bind with network none
    assert res["getxattr"] == "1" and "user.x" in res["listxattr"] and res["removexattr"] == 0
    assert res["shadow"] == 13 and res["statfs"] is True and res["chdir"] == 0, res
    assert res["inotify"] is True and res["ro_xattr"] in (1, 13, 30), res   # EPERM/EACCES/EROFS
    sock = os.path.join(out, "sock_audited")
    assert _find(recs, "bind", sock) == [("create", "allowed")]
    # nothing else recorded as a created file (network mode "none" records its refused
    # TCP bind as a network refusal, operation "bind": tests/test_network_none_bind.py)
    assert [x for x in recs if x["syscall"] == "bind" and x["path"] != sock
            and x["operation"] != "bind"] == [], recs
    assert _find(recs, "setxattr", out) == [("write", "allowed")]
    assert _find(recs, "lsetxattr", sock) == [("write", "allowed")]
    assert _find(recs, "getxattr", out) == [("metadata", "allowed")]
    assert _find(recs, "getxattr", "/etc/shadow") == [("metadata", "denied")]
    assert _find(recs, "listxattr", out) == [("metadata", "allowed")]
    assert _find(recs, "removexattr", out) == [("write", "allowed")]
    assert _find(recs, "statfs", os.path.join(work, "data.txt")) == [("metadata", "allowed")]
    assert _find(recs, "chdir", os.path.join(work, "a", "b")) == [("metadata", "allowed")]
    assert _find(recs, "inotify_add_watch", os.path.join(work, "a")) == [("read", "allowed")]
    assert _find(recs, "setxattr", os.path.join(work, "data.txt")) == [("write", "denied")]
    names = {x["flags"] for x in recs if x["syscall"] in ("setxattr", "getxattr")}
    assert "name=user.x" in names, names


def test_refused_bind_and_setxattr_are_listed_under_denied(launcher, tmp_path, py):
    work, out = _tree(tmp_path)
    prog = ("import os, socket, sys\n"
            "w = sys.argv[1]\n"
            "for f in (lambda: socket.socket(socket.AF_UNIX).bind(w + '/a/sock'),\n"
            "          lambda: os.setxattr(w + '/data.txt', 'user.q', b'1')):\n"
            "    try: f()\n"
            "    except OSError: pass\n")
    r = launcher.spawn([py, "-I", "-c", prog, work], policy=_policy("denied"), workdir=work,
                       output_dir=out)
    assert r.status == "ok", (r.reason, r.stderr)
    got = {(d["syscall"], d["path"], d["operation"]) for d in r.denied}
    assert ("bind", os.path.join(work, "a", "sock"), "create") in got, r.denied
    assert ("setxattr", os.path.join(work, "data.txt"), "write") in got, r.denied
