"""Runs inside a sandbox; reports what it can see and do as one IPC message.

Sent over SANDBOX_IPC_FD (type "probe"), so the report works even when
stdout is a terminal under test. Every check records an errno or a value;
the test on the outside decides what is right.
"""
import ctypes
import errno
import fcntl
import json
import os
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = {}


def sys_errno(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()


status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines()
              if ":" in line)
out["pid"] = os.getpid()
out["hostname"] = socket.gethostname()
out["caps"] = {k: status[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
out["no_new_privs"] = status["NoNewPrivs"].strip()
out["seccomp"] = status["Seccomp"].strip()
out["interfaces"] = [name for _, name in socket.if_nameindex()]
out["ptrace"] = sys_errno(101, 0, 0, 0, 0)                 # PTRACE_TRACEME
params = ctypes.create_string_buffer(120)
out["io_uring_setup"] = sys_errno(425, 1, ctypes.addressof(params))
out["keyctl"] = sys_errno(250, 0, 0, 0, 0)                 # KEYCTL_GET_KEYRING_ID
try:
    socket.socket(40, socket.SOCK_STREAM).close()          # AF_VSOCK
    out["vsock"] = 0
except OSError as e:
    out["vsock"] = e.errno
try:
    fcntl.ioctl(1, 0x5412, b"x")                           # TIOCSTI on our stdout
    out["tiocsti"] = 0
except OSError as e:
    out["tiocsti"] = e.errno
with open("/proc/self/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
out["session"] = {"sid": os.getsid(0), "pgid": os.getpgid(0), "tty_nr": int(fields[4])}
port = int(os.environ.get("PROBE_PORT", "0"))
if port:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        out["host_connect"] = 0
    except OSError as e:
        out["host_connect"] = e.errno or -1
try:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname(), timeout=2)
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    out["loopback_echo"] = conn.recv(4).decode()
except OSError as e:
    out["loopback_echo"] = f"errno {e.errno}"
body = json.dumps({"type": "probe", "payload": out}).encode()
os.write(int(os.environ["SANDBOX_IPC_FD"]), struct.pack(">I", len(body)) + body)
