"""Exec of a file with no path in the view (probe 1, F1).

A policy says where programs may be run from (exec rules; Landlock EXECUTE and
`noexec` mounts everywhere else). A memfd is a file on the kernel's internal
shmem mount, which neither the mount view nor Landlock covers: under `strict`
a program copied any binary into one and ran it with execveat(fd, "",
AT_EMPTY_PATH), fexecve or execve("/proc/self/fd/N"), while the audit recorded
`DENY exec ... /memfd:x (deleted)` for a call that went through.

Judged from the host: the program's output (a marker only a successful exec
prints) and exit codes, and the run's audit records. Files made with O_TMPFILE
in the writable places are checked too: they have no name either, and must stay
as unrunnable as the place they live in.
"""
from __future__ import annotations

import errno
import json

import pytest

pytestmark = pytest.mark.isolation

BUILTINS = ("strict", "default", "build", "base", "spawn_process", "spawn_middleware")

# Each attempt forks; the child makes an anonymous copy of /bin/echo and runs it one
# way: the marker is printed only if the exec succeeded, else the child exits
# 100 + errno. The copy is reopened read-only first (no writer left: ETXTBSY would
# otherwise hide what the layers decide).
ATTEMPTS = r"""
import json, os, sys
ELF = open("/bin/echo", "rb").read()
O_TMPFILE = 0o20000000 | os.O_DIRECTORY

def anonymous(kind):
    if kind == "memfd":
        fd = os.memfd_create("x", 0)
    elif kind == "memfd_cloexec":
        fd = os.memfd_create("x", os.MFD_CLOEXEC)
    else:
        fd = os.open(kind, O_TMPFILE | os.O_RDWR, 0o755)
    os.write(fd, ELF)
    try:
        os.fchmod(fd, 0o755)   # a sealed memfd refuses it (EPERM): the exec decides below
    except OSError:
        pass
    ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    os.close(fd)
    return ro

def attempt(kind, how):
    pid = os.fork()
    if pid == 0:
        try:
            fd = anonymous(kind)
            argv = ["echo", f"RAN {kind} {how}"]
            if how == "fexecve":
                os.execve(fd, argv, {})
            else:
                os.execve(f"/proc/self/fd/{fd}", argv, {})
        except OSError as e:
            os._exit(100 + e.errno)
        os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

got = {f"{k} {h}": attempt(k, h) for k in sys.argv[1:] for h in ("fexecve", "proc")}
print(json.dumps(got))
"""


@pytest.mark.parametrize("policy", BUILTINS)
def test_a_memfd_is_never_run(launcher, policy):
    r = launcher.spawn(["python3", "-I", "-c", ATTEMPTS, "memfd", "memfd_cloexec"],
                       policy=policy)
    assert r.status == "ok" and "RAN" not in r.stdout, (r.status, r.stdout, r.stderr)
    got = json.loads(r.stdout)
    assert set(got.values()) == {100 + errno.EACCES}, got


def test_tmpfiles_stay_as_unrunnable_as_their_place(launcher, tmp_path):
    """strict: /tmp, /dev/shm and the output directory are noexec."""
    out = tmp_path / "out"
    out.mkdir()
    r = launcher.spawn(["sh", "-c", f'exec python3 -I -c \'{ATTEMPTS}\' /tmp /dev/shm '
                        '"$SANDBOX_OUTPUT"'], policy="strict", output_dir=str(out))
    assert r.status == "ok" and "RAN" not in r.stdout, (r.status, r.stdout, r.stderr)
    got = json.loads(r.stdout)
    assert len(got) == 6 and set(got.values()) == {100 + errno.EACCES}, got


def test_the_audit_denies_only_what_was_refused(launcher):
    """strict audits every exec: its DENY records of the memfd are refusals."""
    r = launcher.spawn(["python3", "-I", "-c", ATTEMPTS, "memfd"], policy="strict")
    got = json.loads(r.stdout)
    memfd = [d for d in r.denied if d["operation"] == "exec" and "memfd:x" in d["path"]]
    assert memfd, r.denied
    assert set(got.values()) == {100 + errno.EACCES}, (got, memfd)


EVERYDAY = r"""
import fcntl, json, mmap, os
out = {}
fd = os.memfd_create("buf", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
os.write(fd, b"hello")
os.lseek(fd, 0, 0)
out["read"] = os.read(fd, 5).decode()
out["name"] = os.readlink(f"/proc/self/fd/{fd}")
out["cloexec"] = bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
out["sealed"] = bool(fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_GROW)
# JIT-style double mapping (libffi's closures): PROT_EXEC of a memfd stays allowed
jit = os.memfd_create("jit", 0)
os.ftruncate(jit, 4096)
m = mmap.mmap(jit, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)
out["prot_exec"] = True
out["inherit"] = not fcntl.fcntl(jit, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
try:
    os.memfd_create("x", 0x10)   # MFD_EXEC
    out["mfd_exec"] = "made"
except OSError as e:
    out["mfd_exec"] = e.errno
print(json.dumps(out))
"""


@pytest.mark.parametrize("policy", ["strict", "default"])
def test_everyday_memfds_still_work(launcher, policy):
    r = launcher.spawn(["python3", "-I", "-c", EVERYDAY], policy=policy)
    assert r.status == "ok", (r.reason, r.stderr)
    assert json.loads(r.stdout) == {"read": "hello", "name": "/memfd:buf (deleted)",
                                    "cloexec": True, "sealed": True, "prot_exec": True,
                                    "inherit": True, "mfd_exec": errno.EACCES}, r.stdout
