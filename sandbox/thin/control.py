"""Starting, asking and stopping the per-user daemon (`sandbox daemon start|stop|status`,
and `sandbox bench`): the caller's side of its socket, apart from the daemon's loop
(sandbox/thin/daemon.py), which needs none of it but `socket_cred`."""
from __future__ import annotations

import os
import socket
import sys
import time

from sandbox.thin import wire


def socket_cred(conn: socket.socket) -> tuple[int, int, int]:
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    return (int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:8], "little"),
            int.from_bytes(raw[8:12], "little"))


def start(env: "os._Environ[str] | dict[str, str]", timeout: float = 20.0) -> str:
    """`sandbox daemon start`: a detached daemon with an empty environment but for what
    locates the state directory; returns its status line once it answers."""
    import subprocess
    from sandbox.launcher.output_path import private_dir
    # the state directory of `env` (the caller's), made private level by level
    state = private_dir(wire.state_dir(env), what="state directory ($SANDBOX_HOME)",
                        empty=False, system_check=False)
    d = private_dir(os.path.join(state, "daemon"), what="state directory", empty=False,
                    system_check=False)
    path = os.path.join(d, os.path.basename(wire.socket_path(env)))
    line = status(path)
    if line:
        return "already " + line
    keep = {k: env[k] for k in ("SANDBOX_HOME", "XDG_STATE_HOME", "HOME") if k in env}
    # this install's daemon, whatever the interpreter's own path holds (a checkout on
    # PYTHONPATH would otherwise start the venv's installed copy under its name)
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(wire.package_dir())!r}); "
            "from sandbox.thin.daemon import main; sys.exit(main(sys.argv[1:]))")
    subprocess.Popen([sys.executable, "-I", "-c", code, path], env=keep,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = status(path)
        if line:
            return line
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not answer on {path} within {timeout:.0f}s")


def ask(path: str, op: str) -> str | None:
    if not wire.private_dir_ok(os.path.dirname(path)):
        return None
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    try:
        s.connect(path)
        if socket_cred(s)[1] != os.getuid():
            return None
        s.sendall(wire.encode(op, [], {}))
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out.decode().strip() or None
    except OSError:
        return None
    finally:
        s.close()


def status(path: str) -> str | None:
    return ask(path, "status")


def stop(path: str, timeout: float = 30.0) -> bool:
    """Ask the daemon to stop (runs in flight finish first); True once its socket is gone."""
    if ask(path, "stop") is None:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and os.path.lexists(path):
        time.sleep(0.05)
    return not os.path.lexists(path)
