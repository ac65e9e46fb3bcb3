"""Run inside a sandbox: touch a scripted list of paths by every audited syscall.

Usage: python audit_script.py OUT WORK [pem]
  OUT  a writable directory (the policy's ${OUTPUT}), WORK a read-only one.
  With "pem", the policy is expected to deny OUT/*.pem (a guarded tree).

Every call is made with the raw syscall (ctypes), so the test knows exactly
which syscall the kernel saw, from three places: the main thread, a second
thread, and a grandchild process. It prints one JSON object: the expected
records [operation, syscall, path, allowed] (paths all under OUT or WORK, so
the test can ignore the interpreter's own start-up noise).
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import threading

NR = {"open": 2, "stat": 4, "lstat": 6, "access": 21, "execve": 59, "truncate": 76,
      "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87,
      "symlink": 88, "readlink": 89, "chmod": 90, "chown": 92, "lchown": 94, "utime": 132,
      "mknod": 133, "utimes": 235, "openat": 257, "mkdirat": 258, "mknodat": 259,
      "fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263, "renameat": 264,
      "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268, "faccessat": 269,
      "utimensat": 280, "renameat2": 316, "execveat": 322, "statx": 332, "openat2": 437,
      "faccessat2": 439, "fchmodat2": 452}
AT_FDCWD = -100
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def sc(name: str, *args: object) -> int:
    conv = []
    for a in args:
        conv.append(ctypes.c_char_p(a.encode()) if isinstance(a, str) else
                    ctypes.c_long(a) if isinstance(a, int) else a)
    ret = libc.syscall(ctypes.c_long(NR[name]), *conv)
    if ret < 0:
        return -ctypes.get_errno()
    return ret


def main() -> None:
    out, work = sys.argv[1], sys.argv[2]
    pem = len(sys.argv) > 3 and sys.argv[3] == "pem"
    expected: list[list[object]] = []
    lock = threading.Lock()
    buf = ctypes.create_string_buffer(512)

    def want(op: str, syscall: str, path: str, allowed: bool = True) -> None:
        with lock:
            expected.append([op, syscall, path, allowed])

    O_RDONLY, O_WRONLY, O_CREAT, O_DIRECTORY = 0, 1, 0o100, 0o200000

    # -- main thread: opens, creates, metadata --------------------------------------------------
    fd = sc("open", f"{out}/a.txt", O_WRONLY | O_CREAT, 0o644)
    want("create", "open", f"{out}/a.txt")
    os.write(fd, b"a"), os.close(fd)
    os.close(sc("openat", AT_FDCWD, f"{out}/a.txt", O_RDONLY, 0))
    want("read", "openat", f"{out}/a.txt")
    dfd = sc("openat", AT_FDCWD, out, O_RDONLY | O_DIRECTORY, 0)
    want("read", "openat", out)
    os.close(sc("openat", dfd, "a.txt", O_WRONLY, 0))          # relative to a dirfd
    want("write", "openat", f"{out}/a.txt")
    how = (ctypes.c_uint64 * 3)(O_RDONLY, 0, 0)
    os.close(sc("openat2", AT_FDCWD, f"{out}/a.txt", ctypes.byref(how), ctypes.c_long(24)))
    want("read", "openat2", f"{out}/a.txt")
    os.close(sc("creat", f"{out}/b.txt", 0o600))
    want("create", "creat", f"{out}/b.txt")
    assert sc("creat", f"{work}/nope.txt", 0o600) < 0                 # read-only: denied
    want("create", "creat", f"{work}/nope.txt", False)
    os.close(sc("open", f"{work}/in.txt", O_RDONLY, 0))
    want("read", "open", f"{work}/in.txt")
    assert sc("mkdir", f"{out}/d1", 0o755) == 0
    want("create", "mkdir", f"{out}/d1")
    assert sc("mkdirat", dfd, "d2", 0o755) == 0
    want("create", "mkdirat", f"{out}/d2")
    assert sc("rename", f"{out}/d2", f"{out}/d3") == 0
    want("delete", "rename", f"{out}/d2")
    want("create", "rename", f"{out}/d3")
    assert sc("rmdir", f"{out}/d3") == 0
    want("delete", "rmdir", f"{out}/d3")
    assert sc("truncate", f"{out}/a.txt", 0) == 0
    want("write", "truncate", f"{out}/a.txt")
    assert sc("chmod", f"{out}/a.txt", 0o600) == 0
    want("write", "chmod", f"{out}/a.txt")
    assert sc("fchmodat", dfd, "a.txt", 0o644) == 0
    want("write", "fchmodat", f"{out}/a.txt")
    sc("chown", f"{out}/a.txt", -1, -1)
    want("write", "chown", f"{out}/a.txt")
    assert sc("symlink", "a.txt", f"{out}/ln") == 0
    want("create", "symlink", f"{out}/ln")
    sc("lchown", f"{out}/ln", -1, -1)
    want("write", "lchown", f"{out}/ln")
    os.close(sc("open", f"{out}/ln", O_RDONLY, 0))                    # follows the link
    want("read", "open", f"{out}/a.txt")
    assert sc("stat", f"{out}/ln", buf) == 0
    want("metadata", "stat", f"{out}/a.txt")
    assert sc("lstat", f"{out}/ln", buf) == 0
    want("metadata", "lstat", f"{out}/ln")
    assert sc("readlink", f"{out}/ln", buf, 512) > 0
    want("metadata", "readlink", f"{out}/ln")
    assert sc("access", f"{work}/in.txt", 4) == 0
    want("metadata", "access", f"{work}/in.txt")
    assert sc("utime", f"{out}/b.txt", 0) == 0
    want("write", "utime", f"{out}/b.txt")
    assert sc("mknod", f"{out}/fifo", 0o10644, 0) == 0                # S_IFIFO
    want("create", "mknod", f"{out}/fifo")
    assert sc("unlink", f"{out}/fifo") == 0
    want("delete", "unlink", f"{out}/fifo")
    if pem:
        assert sc("open", f"{out}/key.pem", O_WRONLY | O_CREAT, 0o600) < 0
        want("create", "open", f"{out}/key.pem", False)
        assert sc("rename", f"{out}/b.txt", f"{out}/b.pem") < 0
        want("delete", "rename", f"{out}/b.txt")
        want("create", "rename", f"{out}/b.pem", False)

    # -- a second thread: the *at family -----------------------------------------------------
    def second() -> None:
        assert sc("renameat", dfd, "b.txt", dfd, "c.txt") == 0
        want("delete", "renameat", f"{out}/b.txt")
        want("create", "renameat", f"{out}/c.txt")
        assert sc("renameat2", AT_FDCWD, f"{out}/c.txt", AT_FDCWD, f"{out}/d.txt", 1) == 0
        want("delete", "renameat2", f"{out}/c.txt")
        want("create", "renameat2", f"{out}/d.txt")
        assert sc("link", f"{out}/d.txt", f"{out}/e.txt") == 0
        want("read", "link", f"{out}/d.txt")
        want("create", "link", f"{out}/e.txt")
        assert sc("linkat", dfd, "e.txt", dfd, "f.txt", 0) == 0
        want("read", "linkat", f"{out}/e.txt")
        want("create", "linkat", f"{out}/f.txt")
        assert sc("symlinkat", "f.txt", dfd, "ln2") == 0
        want("create", "symlinkat", f"{out}/ln2")
        assert sc("readlinkat", dfd, "ln2", buf, 512) > 0
        want("metadata", "readlinkat", f"{out}/ln2")
        assert sc("newfstatat", dfd, "ln2", buf, 0) == 0
        want("metadata", "newfstatat", f"{out}/f.txt")
        assert sc("newfstatat", dfd, "ln2", buf, 0x100) == 0          # AT_SYMLINK_NOFOLLOW
        want("metadata", "newfstatat", f"{out}/ln2")
        assert sc("statx", AT_FDCWD, f"{work}/in.txt", 0, 0xfff, buf) == 0
        want("metadata", "statx", f"{work}/in.txt")
        assert sc("faccessat", dfd, "d.txt", 0) == 0
        want("metadata", "faccessat", f"{out}/d.txt")
        assert sc("faccessat2", dfd, "d.txt", 0, 0) == 0
        want("metadata", "faccessat2", f"{out}/d.txt")
        sc("fchownat", dfd, "d.txt", -1, -1, 0)
        want("write", "fchownat", f"{out}/d.txt")
        sc("fchmodat2", dfd, "d.txt", 0o644, 0)
        want("write", "fchmodat2", f"{out}/d.txt")
        assert sc("utimensat", dfd, "d.txt", 0, 0) == 0
        want("write", "utimensat", f"{out}/d.txt")
        assert sc("utimes", f"{out}/d.txt", 0) == 0
        want("write", "utimes", f"{out}/d.txt")
        assert sc("futimesat", dfd, "d.txt", 0) == 0
        want("write", "futimesat", f"{out}/d.txt")
        assert sc("mknodat", dfd, "fifo2", 0o10644, 0) == 0
        want("create", "mknodat", f"{out}/fifo2")
        assert sc("unlinkat", dfd, "fifo2", 0) == 0
        want("delete", "unlinkat", f"{out}/fifo2")
        assert sc("unlinkat", dfd, "d1", 0x200) == 0                  # AT_REMOVEDIR
        want("delete", "unlinkat", f"{out}/d1")
        assert sc("unlinkat", AT_FDCWD, f"{work}/in.txt", 0) < 0      # read-only: denied
        want("delete", "unlinkat", f"{work}/in.txt", False)

    t = threading.Thread(target=second)
    t.start()
    t.join()

    # -- a grandchild process: exec attempts (the output directory is not executable) --------
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if os.fork() == 0:
            sc("execve", f"{out}/a.txt", (ctypes.c_char_p * 2)(b"x", None), 0)
            sc("execveat", dfd, "a.txt", (ctypes.c_char_p * 2)(b"x", None), 0, 0)
            os.close(sc("open", f"{out}/from-grandchild", O_WRONLY | O_CREAT, 0o644))
            os.write(w, str(os.getpid()).encode())
            os._exit(0)
        os.wait()
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    os.read(r, 100)
    want("exec", "execve", f"{out}/a.txt", False)
    want("exec", "execveat", f"{out}/a.txt", False)
    want("create", "open", f"{out}/from-grandchild")
    print(json.dumps({"expected": expected}))


if __name__ == "__main__":
    main()
