"""Raw syscall probes: each returns "ok" or the errno name, never raises.

Raw `syscall(2)` through ctypes so that the exact register values reach the
kernel (glibc wrappers may validate, truncate or translate arguments).
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

SYS = {"ioctl": 16, "getpid": 39, "socket": 41, "clone": 56, "uname": 63, "msgget": 68,
       "ptrace": 101, "personality": 135, "mount": 165, "unshare": 272, "keyctl": 250,
       "io_uring_setup": 425, "bpf": 321, "userfaultfd": 323}
X32_SYSCALL_BIT = 0x40000000


def raw(nr: int, *args: int | ctypes._CData) -> str | int:
    """The syscall's result: its (non-negative) return value, or the errno name."""
    conv = [ctypes.c_ulong(a & 0xFFFFFFFFFFFFFFFF) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    ret = _libc.syscall(ctypes.c_long(nr), *conv)
    if ret < 0:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return ret


def call(name: str, *args: int | ctypes._CData) -> str:
    ret = raw(SYS[name], *args)
    return ret if isinstance(ret, str) else "ok"


def tiocsti(fd: int, request: int) -> str:
    """ioctl(fd, request, "x"): TIOCSTI pushes one byte into the tty's input."""
    ch = ctypes.c_char(b"x")
    return call("ioctl", fd, request, ctypes.byref(ch))


def controlling_pty() -> tuple[int, int]:
    """A fresh pty whose slave becomes our controlling terminal (we must be a session leader
    without one), so TIOCSTI's own "not your tty" EPERM cannot be confused with the filter's."""
    import fcntl
    import termios
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    return master, slave


def clone_newuser() -> str:
    """clone(CLONE_NEWUSER | SIGCHLD) with no stack: a fork into a new user namespace."""
    ret = raw(SYS["clone"], 0x10000000 | 17, 0, 0, 0, 0)
    if ret == 0:
        os._exit(0)   # the child of a successful clone: leave at once
    if isinstance(ret, int):
        os.waitpid(ret, 0)
        return "ok"
    return ret


def _exec_code(code: bytes) -> int:
    """Run machine code in a fresh executable page (x86_64 SysV: returns eax)."""
    size = mmap.PAGESIZE
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_long]
    addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    ctypes.memmove(addr, code, len(code))
    if _libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(size),
                      mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    return ctypes.CFUNCTYPE(ctypes.c_int)(addr)()


def int80_getpid() -> int:
    """getpid through the i386 entry point (`int 0x80`, eax=20) from 64-bit code."""
    return _exec_code(bytes([0xB8, 0x14, 0x00, 0x00, 0x00,   # mov eax, 20 (i386 getpid)
                             0xCD, 0x80,                     # int 0x80
                             0xC3]))                         # ret


def in_child(fn) -> tuple[str, object]:
    """Run fn() in a forked child; ("exit", value) or ("signal", signame)."""
    import json
    import signal
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "signal", signal.Signals(os.WTERMSIG(status)).name
    return "exit", json.loads(data) if data else None
