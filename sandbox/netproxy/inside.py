"""The sandbox's side of mode = "allowlist": one listening socket, made by PID 1, given away.

WHO MAKES THE SOCKET, AND WHY NOBODY INSIDE KEEPS IT. A socket belongs to
the network namespace of the process that creates it, and the monitor cannot
enter the sandbox's (setns needs CAP_SYS_ADMIN in its own user namespace,
which an unprivileged monitor lacks). So PID 1, in the network layer (after
`lo` is up, before any filter), binds 127.0.0.1:`PROXY_PORT` and listens,
sends the descriptor to the monitor over the setup socket (SCM_RIGHTS), and
closes its own copy; PID 2, forked later, never has it. The sandbox cannot
accept() on it (it holds no descriptor, and cannot take the monitor's:
pidfd_getfd and /proc/<pid>/fd need ptrace rights over a process outside its
user and PID namespaces), and cannot take over the address: the socket has
no SO_REUSEPORT, so a second bind of 127.0.0.1:3128 or 0.0.0.0:3128 fails
with EADDRINUSE (tests/test_netallow_attacks.py).

The program finds the proxy through HTTP_PROXY, HTTPS_PROXY and ALL_PROXY
(both spellings) set here, over whatever the policy's env set, and an empty
NO_PROXY: inside the sandbox 127.0.0.1 is its own `lo`, so even loopback
targets go through the proxy.
"""
from __future__ import annotations

import os
import socket

from sandbox import protocol

PROXY_HOST = "127.0.0.1"
PROXY_PORT = 3128
PROXY_URL = f"http://{PROXY_HOST}:{PROXY_PORT}"
DNS_PORT = 53
BACKLOG = 128


def proxy_env() -> dict[str, str]:
    env = {}
    for name in ("http_proxy", "https_proxy"):
        env[name] = env[name.upper()] = PROXY_URL
    env["all_proxy"] = env["ALL_PROXY"] = f"socks5h://{PROXY_HOST}:{PROXY_PORT}"
    env["no_proxy"] = env["NO_PROXY"] = ""
    return env


def open_and_hand_over(monitor_fd: int, dns: bool = False) -> None:
    """Bind and listen in this (the sandbox's) network namespace, send the listening
    descriptor (and, with `dns`, the stub's UDP socket at 127.0.0.1:53: binding port 53
    needs the capability PID 1 still has in its user namespace here) to the monitor,
    close ours. OSError when any step fails."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM)]
    try:
        socks[0].bind((PROXY_HOST, PROXY_PORT))
        socks[0].listen(BACKLOG)
        if dns:
            socks.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            socks[1].bind((PROXY_HOST, DNS_PORT))
        mon = socket.socket(fileno=os.dup(monitor_fd))
        try:
            protocol.send(mon, protocol.ProxyFds(dns=dns), [s.fileno() for s in socks])
        finally:
            mon.close()
    finally:
        for s in socks:
            s.close()
    os.environ.update(proxy_env())
