"""Micro benchmark (not a test): open+close trapped by seccomp notify, answered CONTINUE.

    .venv/bin/python tests/probes/notify_bench.py [iterations]

Prints the per-call time in the sandboxee for: no filter, an allow-all filter,
notify with the `Listener` (fcntl.ioctl on preallocated buffers), the same
with SYNC_WAKE_UP, and a ctypes-ioctl listener loop for comparison.
"""
from __future__ import annotations

import ctypes
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from sandbox.isolation import seccomp  # noqa: E402
from sandbox.monitor import seccomp_notify as sn  # noqa: E402
from sandbox.policy.model import SyscallPolicy  # noqa: E402


def sandboxee(sock: socket.socket, n: int, mode: str) -> None:
    import prctl
    prctl.set_no_new_privs(1)
    if mode != "bare":
        prog = seccomp.compile_program(SyscallPolicy(),
                                       notify={"openat"} if mode != "filter" else set())
        fd = seccomp.install(prog, listener=mode != "filter")
        if fd is not None:
            socket.send_fds(sock, [b"L"], [fd])
            os.close(fd)
    sock.recv(1)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        os.close(os.open("/etc/hostname", os.O_RDONLY))
    sock.sendall(str((time.perf_counter_ns() - t0) / n).encode())


class _Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("nr", ctypes.c_int), ("arch", ctypes.c_uint32), ("ip", ctypes.c_uint64),
                ("args", ctypes.c_uint64 * 6)]


class _Resp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


def serve_ctypes(fd: int, n: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    req, resp = _Notif(), _Resp()
    preq, presp = ctypes.byref(req), ctypes.byref(resp)
    resp.flags = sn.SECCOMP_USER_NOTIF_FLAG_CONTINUE
    ioctl = libc.ioctl
    for _ in range(n):
        ctypes.memset(preq, 0, ctypes.sizeof(req))
        if ioctl(fd, sn.SECCOMP_IOCTL_NOTIF_RECV, preq) != 0:
            raise OSError(ctypes.get_errno(), "recv")
        resp.id = req.id
        ioctl(fd, sn.SECCOMP_IOCTL_NOTIF_SEND, presp)


def one(mode: str, n: int) -> float:
    mine, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        mine.close()
        sandboxee(theirs, n, mode)
        os._exit(0)
    theirs.close()
    listener = None
    if mode.startswith("notify"):
        _, fds, _, _ = socket.recv_fds(mine, 1, 1)
        listener = sn.Listener(fds[0])
        if mode.endswith("sync"):
            listener.set_sync_wakeup()
    mine.sendall(b"g")
    if listener is not None:
        if "ctypes" in mode:
            serve_ctypes(listener.fileno(), n)
        else:
            for _ in range(n):
                note = listener.recv()
                listener.respond_continue(note.id)
    per_call = float(mine.recv(100))
    os.waitpid(pid, 0)
    if listener:
        listener.close()
    return per_call / 1000


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    for mode in ("bare", "filter", "notify", "notify-sync", "notify-ctypes",
                 "notify-ctypes-sync"):
        runs = [one(mode, n) for _ in range(5)]
        print(f"{mode:20s} median {statistics.median(runs):7.2f} us/open+close "
              f"(min {min(runs):.2f}, max {max(runs):.2f})")


if __name__ == "__main__":
    main()
